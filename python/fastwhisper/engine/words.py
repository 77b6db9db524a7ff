"""Word timestamps of one decoded window and whisper's hallucination-silence skipping.

Mirrors the `if word_timestamps:` block of whisper.transcribe's seek loop (openai-whisper 20250625):
whisper.timing.add_word_timestamps on the window, seeking to the last word's end, and, with
`hallucination_silence_threshold`, skipping silence around segments whose words look hallucinated.
Word alignment runs the model on one window at a time (a forward pass with hooks on the cross-attention),
as in whisper: it is not batched.
"""

from typing import List, Optional, Tuple

from whisper.audio import FRAMES_PER_SECOND
from whisper.timing import add_word_timestamps
from whisper.utils import get_end

from .options import TRANSCRIBE_DEFAULTS

# whisper's `punctuation`: its default prepend and append punctuations, one string (a word is skipped
# by the anomaly score when it is a substring of it)
PUNCTUATION = TRANSCRIBE_DEFAULTS["prepend_punctuations"] + TRANSCRIBE_DEFAULTS["append_punctuations"]


def word_anomaly_score(word: dict) -> float:
    """How unlike a real word this is: improbable, very short or very long (whisper's scoring)."""
    probability = word.get("probability", 0.0)
    duration = word["end"] - word["start"]
    score = 0.0
    if probability < 0.15:
        score += 1.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def is_segment_anomaly(segment: Optional[dict]) -> bool:
    if segment is None or not segment["words"]:
        return False
    words = [w for w in segment["words"] if w["word"] not in PUNCTUATION][:8]
    score = sum(word_anomaly_score(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def next_words_segment(segments: List[dict]) -> Optional[dict]:
    return next((s for s in segments if s["words"]), None)


def add_words_and_skip_hallucinations(stream, segments: List[dict], single_timestamp_ending: bool) -> Tuple[int, bool]:
    """Add "words" to `segments` (in place, possibly dropping trailing ones) and return (seek, keep):
    the stream's next seek position, and False when the whole window is to be dropped."""
    window, settings = stream.window, stream.settings
    seek, previous_seek, time_offset = stream.seek, window.seek, window.time_offset
    add_word_timestamps(segments=segments, model=stream.model, tokenizer=stream.tokenizer, mel=window.mel_segment,
                        num_frames=window.segment_size, prepend_punctuations=settings.prepend_punctuations,
                        append_punctuations=settings.append_punctuations,
                        last_speech_timestamp=stream.last_speech_timestamp)
    if not single_timestamp_ending:
        last_word_end = get_end(segments)
        if last_word_end is not None and last_word_end > time_offset:
            seek = round(last_word_end * FRAMES_PER_SECOND)

    threshold = settings.hallucination_silence_threshold
    if threshold is not None:
        if not single_timestamp_ending:
            last_word_end = get_end(segments)
            if last_word_end is not None and last_word_end > time_offset:
                remaining_duration = window.end_time - last_word_end
                seek = round(last_word_end * FRAMES_PER_SECOND) if remaining_duration > threshold \
                    else previous_seek + window.segment_size

        # a first segment that may be a hallucination after a long gap: skip the gap, drop the window
        first = next_words_segment(segments)
        if first is not None and is_segment_anomaly(first):
            gap = first["start"] - time_offset
            if gap > threshold:
                return previous_seek + round(gap * FRAMES_PER_SECOND), False

        # a possible hallucination between silences (or other hallucinations): cut the window there
        hal_last_end = stream.last_speech_timestamp
        for si, segment in enumerate(segments):
            if not segment["words"]:
                continue
            if is_segment_anomaly(segment):
                following = next_words_segment(segments[si + 1:])
                hal_next_start = following["words"][0]["start"] if following is not None \
                    else time_offset + window.duration
                silence_before = (segment["start"] - hal_last_end > threshold or segment["start"] < threshold
                                  or segment["start"] - time_offset < 2.0)
                silence_after = (hal_next_start - segment["end"] > threshold or is_segment_anomaly(following)
                                 or window.end_time - segment["end"] < 2.0)
                if silence_before and silence_after:
                    seek = round(max(time_offset + 1, segment["start"]) * FRAMES_PER_SECOND)
                    if stream.content_duration - segment["end"] < threshold:
                        seek = stream.content_frames
                    del segments[si:]
                    break
            hal_last_end = segment["end"]

    last_word_end = get_end(segments)
    if last_word_end is not None:
        stream.last_speech_timestamp = last_word_end
    return seek, True
