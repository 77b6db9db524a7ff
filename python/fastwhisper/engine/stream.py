"""One audio's long-form transcription as a state machine: window -> (decode elsewhere) -> accept(result).

`TranscriptionStream` reproduces the per-window logic of `whisper.transcribe` (openai-whisper 20250625,
whisper/transcribe.py) for one audio, without decoding anything itself, so that the windows of several
audios can be encoded and decoded together (fastwhisper.engine). Each method says which part of
whisper's loop it mirrors. Given the same DecodingResults, a stream produces exactly the dict that
whisper.transcribe returns.
"""

from typing import List, Optional

import torch
from whisper.audio import FRAMES_PER_SECOND, HOP_LENGTH, N_FRAMES, SAMPLE_RATE, pad_or_trim
from whisper.decoding import DecodingResult
from whisper.tokenizer import LANGUAGES, get_tokenizer
from whisper.utils import exact_div, format_timestamp, make_safe

from .options import TranscribeOptions
from .words import add_words_and_skip_hallucinations


class Window:
    """The 30-s window a stream is at: its position and its padded log-mel segment."""

    def __init__(self, seek: int, segment_size: int, mel_segment: torch.Tensor):
        self.seek = seek
        self.segment_size = segment_size
        self.mel_segment = mel_segment  # [n_mels, N_FRAMES] on the model's device, in the compute dtype
        self.time_offset = float(seek * HOP_LENGTH / SAMPLE_RATE)
        self.end_time = float((seek + N_FRAMES) * HOP_LENGTH / SAMPLE_RATE)
        self.duration = segment_size * HOP_LENGTH / SAMPLE_RATE


class TranscriptionStream:
    """The transcription of one audio (a 16 kHz waveform), one window at a time.

    Use: if `needs_language`, `set_language(code)` (from `language_mel()`); then repeat
    `window = next_window()` (None: finished), decode `window.mel_segment` with `decode_options()`,
    `accept(result)`; finally `result()`.
    """

    def __init__(self, model, mel: torch.Tensor, settings: TranscribeOptions, label: str = "",
                 print_label: bool = False):
        self.model, self.settings, self.label = model, settings, label
        self.prefix = f"{label}: " if print_label else ""
        self.mel = mel  # [n_mels, frames]: the audio's log-mel with whisper's 30 s of silence padded (job.audio_mel)
        self.content_frames = self.mel.shape[-1] - N_FRAMES
        self.content_duration = float(self.content_frames * HOP_LENGTH / SAMPLE_RATE)
        self.options = dict(settings.decode_options)  # this audio's DecodingOptions fields
        self.input_stride = exact_div(N_FRAMES, model.dims.n_audio_ctx)  # mel frames per output token: 2
        self.time_precision = self.input_stride * HOP_LENGTH / SAMPLE_RATE  # seconds per output token: 0.02
        self.window: Optional[Window] = None
        self.finished = False
        if self.options.get("language") is None and not model.is_multilingual:
            self.options["language"] = "en"
        if self.options.get("language") is not None:
            self._start()

    # ---- language (whisper.transcribe: the `decode_options["language"] is None` block)

    @property
    def needs_language(self) -> bool:
        return self.options.get("language") is None

    def language_mel(self) -> torch.Tensor:
        """The first 30 s of the padded mel, as whisper hands it to detect_language."""
        if self.settings.verbose:
            self._print("Detecting language using up to the first 30 seconds. Use `--language` to specify the language")
        return pad_or_trim(self.mel, N_FRAMES).to(self.model.device).to(self.settings.dtype)

    def set_language(self, language: str) -> None:
        self.options["language"] = language
        if self.settings.verbose is not None:
            self._print(f"Detected language: {LANGUAGES[language].title()}")
        self._start()

    # ---- set-up after the language is known (tokenizer, clips, initial prompt)

    def _start(self) -> None:
        model, settings = self.model, self.settings
        self.language = self.options["language"]
        self.tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                       language=self.language, task=self.options.get("task", "transcribe"))
        clips = settings.clip_timestamps
        if isinstance(clips, str):
            clips = [float(ts) for ts in (clips.split(",") if clips else [])]
        points = [round(ts * FRAMES_PER_SECOND) for ts in clips]
        if not points:
            points.append(0)
        if len(points) % 2 == 1:
            points.append(self.content_frames)
        self.clips = list(zip(points[::2], points[1::2]))
        self.clip_idx = 0
        self.seek = self.clips[0][0]
        self.all_tokens: List[int] = []
        self.all_segments: List[dict] = []
        self.prompt_reset_since = 0
        self.last_speech_timestamp = 0.0
        self.remaining_prompt_length = model.dims.n_text_ctx // 2 - 1
        self.initial_prompt_tokens: List[int] = []
        if settings.initial_prompt is not None:
            self.initial_prompt_tokens = self.tokenizer.encode(" " + settings.initial_prompt.strip())
            self.all_tokens.extend(self.initial_prompt_tokens)
            self.remaining_prompt_length -= len(self.initial_prompt_tokens)

    # ---- the next window (top of whisper's seek loop: clip bookkeeping, mel slice, prompt)

    def next_window(self) -> Optional[Window]:
        """Advance through the clips to the next window; None (and `finished`) when the audio is done.

        One deliberate difference from whisper: a clip (clip_timestamps) that starts or ends past the end
        of the audio ends at the end of the audio. whisper decodes the empty window there, and since its
        seek then moves by the window's size (zero or less) it never returns. With one set of clips for
        several audios of different lengths, this would hang the whole batch.
        """
        self.seek, self.clip_idx, size = self._locate(self.seek, self.clip_idx)
        if size == 0:
            self.window, self.finished = None, True
            return None
        self.window = self._window(self.seek, size)
        return self.window

    def at_end(self) -> bool:
        """Whether next_window() would return None: the audio is done (nothing is built or moved)."""
        return self._locate(self.seek, self.clip_idx)[2] == 0

    def _locate(self, seek: int, clip_idx: int):
        """(seek, clip_idx, size) of the window at or after `seek` in clip `clip_idx`; size 0: none is left."""
        while clip_idx < len(self.clips):
            clip_start, clip_end = self.clips[clip_idx]
            if seek < clip_start:
                seek = clip_start
            if seek >= clip_end:
                clip_idx += 1
                if clip_idx < len(self.clips):
                    seek = self.clips[clip_idx][0]
                continue
            size = min(N_FRAMES, self.content_frames - seek, clip_end - seek)
            if size <= 0:  # the clip reaches past the end of the audio: it ends there (see next_window)
                seek = clip_end
                continue
            return seek, clip_idx, size
        return seek, clip_idx, 0

    def _window(self, seek: int, size: int) -> Window:
        segment = pad_or_trim(self.mel[:, seek:seek + size], N_FRAMES)
        return Window(seek, size, segment.to(self.model.device).to(self.settings.dtype))

    # ---- windows ahead (the windows of one audio decoded together)

    @property
    def speculates(self) -> bool:
        """Whether the windows after the current one may be decoded before it is accepted: no text carried
        to the next window (condition_on_previous_text=False, no carry_initial_prompt), so every later window
        decodes with an empty prompt; no timestamps, so each window almost always moves the seek by its whole
        size (a window that samples two consecutive timestamp tokens anyway moves it less, and the windows
        decoded after it are dropped, see `matches`); no word timestamps (their hallucination skip moves the
        seek too); temperature 0 first (windows ahead are never sampled: a window that needs a higher
        temperature is decoded again in its turn, with its audio's generator)."""
        s = self.settings
        return (not s.condition_on_previous_text and not s.carry_initial_prompt and not s.word_timestamps
                and bool(self.options.get("without_timestamps")) and bool(s.temperatures) and s.temperatures[0] == 0)

    def lookahead(self, count: int) -> List[Window]:
        """Up to `count` windows after the current one, each where the window before it would end if the
        seek moved by its whole size."""
        windows: List[Window] = []
        if self.window is None:
            return windows
        seek, clip_idx, size = self.window.seek, self.clip_idx, self.window.segment_size
        while len(windows) < count:
            seek, clip_idx, size = self._locate(seek + size, clip_idx)
            if size == 0:
                break
            windows.append(self._window(seek, size))
        return windows

    def lookahead_options(self) -> dict:
        """The DecodingOptions fields of a window ahead: the prompt is empty after any accepted window."""
        return {**self.options, "prompt": []}

    def matches(self, window: Window) -> bool:
        """Whether `window` (from `lookahead`, decoded with `lookahead_options`) is this stream's next window,
        with those options: the same position and size, and an empty prompt (a first window skipped as
        silence leaves the initial prompt to the next one). Moves the stream to its next window."""
        current = self.next_window()
        return (current is not None and (current.seek, current.segment_size) == (window.seek, window.segment_size)
                and self.decode_options() == self.lookahead_options())

    def decode_options(self) -> dict:
        """This window's DecodingOptions fields: the call's, with this audio's language and prompt."""
        if self.settings.carry_initial_prompt:
            ignored = max(len(self.initial_prompt_tokens), self.prompt_reset_since)
            remaining = self.all_tokens[ignored:][-self.remaining_prompt_length:]
            prompt = self.initial_prompt_tokens + remaining
        else:
            prompt = self.all_tokens[self.prompt_reset_since:]
        return {**self.options, "prompt": prompt}

    # ---- the decoded window (whisper's loop body after decode_with_fallback)

    def accept(self, result: DecodingResult) -> None:
        window, settings = self.window, self.settings
        # no-speech skip: a probable silence whose text is improbable too
        if settings.no_speech_threshold is not None:
            skip = result.no_speech_prob > settings.no_speech_threshold
            if settings.logprob_threshold is not None and result.avg_logprob > settings.logprob_threshold:
                skip = False
            if skip:
                self.seek += window.segment_size
                return

        segments, single_timestamp_ending = self._split(list(result.tokens), result)
        if settings.word_timestamps:
            seek, keep = add_words_and_skip_hallucinations(self, segments, single_timestamp_ending)
            self.seek = seek
            if not keep:  # the window began with a probable hallucination after silence: drop it
                return

        if settings.verbose:
            for s in segments:
                self._print(make_safe(f"[{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}] {s['text']}"))
        for s in segments:  # an instantaneous or empty segment keeps its times, loses its text
            if s["start"] == s["end"] or s["text"].strip() == "":
                s["text"], s["tokens"], s["words"] = "", [], []
        first_id = len(self.all_segments)
        self.all_segments.extend({"id": first_id + i, **s} for i, s in enumerate(segments))
        self.all_tokens.extend(t for s in segments for t in s["tokens"])
        if not settings.condition_on_previous_text or result.temperature > 0.5:
            self.prompt_reset_since = len(self.all_tokens)  # no prompt after a high-temperature window

    def _split(self, tokens: List[int], result: DecodingResult):
        """Segments of a window's tokens at consecutive timestamp tokens, and the new seek position
        (whisper: from `timestamp_tokens = tokens.ge(...)` to the end of the else-branch)."""
        window, tb = self.window, self.tokenizer.timestamp_begin
        is_ts = [t >= tb for t in tokens]
        single_timestamp_ending = is_ts[-2:] == [False, True]
        consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        segments = []
        if consecutive:
            slices = consecutive + ([len(tokens)] if single_timestamp_ending else [])
            last_slice = 0
            for current_slice in slices:
                piece = tokens[last_slice:current_slice]
                segments.append(self._segment(window.time_offset + (piece[0] - tb) * self.time_precision,
                                              window.time_offset + (piece[-1] - tb) * self.time_precision,
                                              piece, result))
                last_slice = current_slice
            if single_timestamp_ending:  # no speech after the last timestamp
                self.seek += window.segment_size
            else:  # drop the unfinished segment, go on from the last timestamp
                self.seek += (tokens[last_slice - 1] - tb) * self.input_stride
        else:
            duration = window.duration
            timestamps = [t for t in tokens if t >= tb]
            if timestamps and timestamps[-1] != tb:  # no consecutive timestamps, but a last one
                duration = (timestamps[-1] - tb) * self.time_precision
            segments.append(self._segment(window.time_offset, window.time_offset + duration, tokens, result))
            self.seek += window.segment_size
        return segments, single_timestamp_ending

    def _segment(self, start: float, end: float, tokens: List[int], result: DecodingResult) -> dict:
        """whisper's new_segment (seek is the window's start)."""
        eot = self.tokenizer.eot
        return {
            "seek": self.window.seek,
            "start": start,
            "end": end,
            "text": self.tokenizer.decode([t for t in tokens if t < eot]),
            "tokens": list(tokens),
            "temperature": result.temperature,
            "avg_logprob": result.avg_logprob,
            "compression_ratio": result.compression_ratio,
            "no_speech_prob": result.no_speech_prob,
        }

    # ---- progress and result

    @property
    def done_frames(self) -> int:
        """Mel frames of the audio behind the stream (for the progress bar)."""
        if self.finished:
            return self.content_frames
        return max(0, min(self.content_frames, getattr(self, "seek", 0)))

    def result(self) -> dict:
        """whisper.transcribe's return value: text (without the initial prompt), segments, language."""
        return dict(text=self.tokenizer.decode(self.all_tokens[len(self.initial_prompt_tokens):]),
                    segments=self.all_segments, language=self.language)

    def _print(self, line: str) -> None:
        print(self.prefix + line)
