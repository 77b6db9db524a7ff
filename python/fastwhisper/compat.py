"""Everything fastwhisper takes from openai-whisper's internals, in one place.

The rest of fastwhisper uses openai-whisper's public names only: whisper.audio (log-mel, padding, constants),
whisper.tokenizer, whisper.model (Whisper, AudioEncoder, TextDecoder, ModelDimensions), whisper.decoding
(DecodingOptions, DecodingResult, decode), whisper.timing.add_word_timestamps and whisper.utils. What the
C++ decoding loop needs from a `DecodingTask` (its resolved settings and logit filters, the audio features,
the beam search's finalisation and the ranking) and the batched beam-search fix are here, checked against the
openai-whisper versions in SUPPORTED_WHISPER_VERSIONS (tests/test_compat.py).
"""

import functools
import inspect
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import whisper
from whisper.decoding import (ApplyTimestampRules, BeamSearchDecoder, DecodingOptions, DecodingTask, SuppressBlank,
                              SuppressTokens)

# openai-whisper releases whose internals this module is written against.
SUPPORTED_WHISPER_VERSIONS = ("20240930", "20250625")


def whisper_version() -> str:
    return whisper.__version__


@dataclass
class TaskPlan:
    """A DecodingTask's resolved settings, as the C++ loop takes them."""

    whisper_task: DecodingTask  # for this module only
    options: DecodingOptions  # the task's, resolved
    tokenizer: object  # whisper.tokenizer.Tokenizer
    initial_tokens: Tuple[int, ...]
    sample_begin: int  # index of the first sampled token
    sot_index: int  # index of <|startoftranscript|> in initial_tokens
    sample_len: int  # most tokens to sample
    n_group: int  # rows per audio: beam size or best-of
    suppress_blank: bool
    suppress_tokens: Optional[List[int]]
    timestamp_rules: bool
    max_initial_timestamp_index: Optional[int]
    beam_size: Optional[int]  # None: greedy or sampling
    patience: float


def plan(model, options: DecodingOptions) -> TaskPlan:
    """whisper's DecodingTask for `options` (it validates them and builds the tokenizer and the filters)."""
    task = DecodingTask(model, options)
    suppress_blank, suppress_tokens, timestamp_rules, max_initial = False, None, False, None
    for f in task.logit_filters:
        if isinstance(f, SuppressBlank):
            suppress_blank = True
        elif isinstance(f, SuppressTokens):
            suppress_tokens = [int(t) for t in f.suppress_tokens]
        elif isinstance(f, ApplyTimestampRules):
            timestamp_rules = True
            index = f.max_initial_timestamp_index
            max_initial = None if index is None else int(index)
        else:  # a filter added by a later openai-whisper
            raise NotImplementedError(f"decoder='cpp' does not support the logit filter {type(f).__name__}")
    beam = task.decoder if isinstance(task.decoder, BeamSearchDecoder) else None
    return TaskPlan(whisper_task=task, options=task.options, tokenizer=task.tokenizer,
                    initial_tokens=tuple(task.initial_tokens), sample_begin=task.sample_begin,
                    sot_index=task.sot_index, sample_len=task.sample_len, n_group=task.n_group,
                    suppress_blank=suppress_blank, suppress_tokens=suppress_tokens, timestamp_rules=timestamp_rules,
                    max_initial_timestamp_index=max_initial, beam_size=None if beam is None else int(beam.beam_size),
                    patience=1.0 if beam is None else float(beam.patience))


def audio_features(p: TaskPlan, mel: torch.Tensor) -> torch.Tensor:
    """The task's encoder pass (skipped when `mel` is already encoded), in the task's dtype."""
    p.whisper_task.decoder.reset()
    return p.whisper_task._get_audio_features(mel)


def finalize(p: TaskPlan, tokens: torch.Tensor, sum_logprobs: torch.Tensor,
             finished: Optional[List[Dict[tuple, float]]]):
    """whisper's end of decoding: the beam search's finished candidates (`finished`, per audio) merged with the
    live ones; for greedy decoding, an end-of-text token appended where missing."""
    if finished is not None:
        p.whisper_task.decoder.finished_sequences = finished
    return p.whisper_task.decoder.finalize(tokens, sum_logprobs)


def rank(p: TaskPlan, tokens: List[List[torch.Tensor]], sum_logprobs) -> List[int]:
    """The index of the chosen candidate of each audio (whisper's length-penalised ranking)."""
    return p.whisper_task.sequence_ranker.rank(tokens, sum_logprobs)


class _GroupedBatchTask(DecodingTask):
    """DecodingTask for several audios with beam search or best-of-n sampling (n_group > 1).

    openai-whisper 20240930 repeats the tokens n_group times per audio but not the audio features, so the
    cross-attention of several audios fails on mismatched batch sizes. This repeats the features as the task's
    run() expects (it takes every n_group-th row back afterwards)."""

    def _get_audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        return super()._get_audio_features(mel).repeat_interleave(self.n_group, dim=0)

    def _detect_language(self, audio_features: torch.Tensor, tokens: torch.Tensor):
        return super()._detect_language(audio_features[:: self.n_group], tokens)


@functools.lru_cache(maxsize=None)
def _whisper_repeats_features() -> bool:
    """Whether the installed whisper's DecodingTask.run repeats the audio features itself."""
    return "audio_features.repeat_interleave" in inspect.getsource(DecodingTask.run)


@torch.no_grad()
def torch_decode(model, mel: torch.Tensor, options: DecodingOptions):
    """whisper.decode, which also decodes several audios with beam search or best-of-n sampling."""
    n_group = options.beam_size or options.best_of or 1  # as DecodingTask counts it
    if mel.ndim == 3 and mel.shape[0] > 1 and n_group > 1 and not _whisper_repeats_features():
        return _GroupedBatchTask(model, options).run(mel)
    return whisper.decoding.decode(model, mel, options)
