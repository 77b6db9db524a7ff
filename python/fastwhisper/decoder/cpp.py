"""decode_cpp: ``whisper.decode`` with the per-token loop in C++ (torch.classes.fastwhisper.DecoderSession).

openai-whisper's ``DecodingTask`` still validates the options, builds the tokenizer, the initial tokens,
the suppress list, detects the language and ranks the final candidates; the decoder forward passes
(KV cache, cross-attention K/V computed once per audio window), the logit filters and the greedy or
beam-search token selection run in C++. The results are whisper's own ``DecodingResult``.

    import whisper, fastwhisper.decoder.cpp as cd
    results = cd.decode_cpp(model, mel, whisper.DecodingOptions(language="en", fp16=False))
"""

import dataclasses
from typing import List, Optional, Union

import torch
from torch import Tensor
from whisper.decoding import DecodingOptions, DecodingResult
from whisper.model import Whisper
from whisper.utils import compression_ratio

from .. import _library  # noqa: F401  (registers torch.classes.fastwhisper)
from .. import compat
from .weights import DECODER_BLOCK_PARAM_NAMES, decoder_session, decoder_weights  # noqa: F401

# DecodingOptions fields decode_cpp understands; a field added by a later openai-whisper is refused
# (NotImplementedError) unless it has its default value, so nothing decodes differently in silence.
_KNOWN_OPTIONS = {
    "task", "language", "temperature", "sample_len", "best_of", "beam_size", "patience", "length_penalty",
    "prompt", "prefix", "suppress_tokens", "suppress_blank", "without_timestamps", "max_initial_timestamp", "fp16",
}


def _check_supported(options: DecodingOptions) -> None:
    for f in dataclasses.fields(options):
        if f.name in _KNOWN_OPTIONS:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if getattr(options, f.name) != default:
            raise NotImplementedError(f"decode_cpp does not support the DecodingOptions field {f.name!r} yet")


def _loop_options(p: compat.TaskPlan) -> "torch.classes.fastwhisper.DecodeOptions":
    """DecodeOptions for the C++ loop, from the DecodingTask's resolved settings and filters."""
    tok = p.tokenizer
    o = torch.classes.fastwhisper.DecodeOptions()
    o.sample_begin = p.sample_begin
    o.sot_index = p.sot_index
    o.sample_len = p.sample_len
    o.eot = tok.eot
    o.no_speech = tok.no_speech if tok.no_speech is not None else -1
    if p.suppress_blank:
        o.suppress_blank = True
        o.blank_tokens = list(tok.encode(" ")) + [tok.eot]
    if p.suppress_tokens is not None:
        o.suppress_tokens = p.suppress_tokens
    if p.timestamp_rules:
        o.timestamp_rules = True
        o.timestamp_begin = tok.timestamp_begin
        o.no_timestamps = tok.no_timestamps if tok.no_timestamps is not None else -1
        o.max_initial_timestamp_index = -1 if p.max_initial_timestamp_index is None else p.max_initial_timestamp_index
    o.temperature = float(p.options.temperature)
    if p.beam_size is not None:
        o.beam_size = p.beam_size
        o.patience = p.patience
        o.temperature = 0.0  # whisper's beam search ignores the temperature (results still report it)
    return o


@torch.no_grad()
def decode_cpp(
    model: Whisper,
    mel: Tensor,
    options: DecodingOptions = DecodingOptions(),
    session=None,
    seed: Optional[int] = None,
) -> Union[DecodingResult, List[DecodingResult]]:
    """``whisper.decode(model, mel, options)`` with the decoding loop in C++; same results.

    mel: [n_mels, 3000] or [batch, n_mels, 3000], or encoded audio features [batch, n_audio_ctx, d].
    session: a DecoderSession from ``decoder_session(model.decoder)`` to reuse (one is made otherwise).
    seed: for temperature sampling, seeds a private generator; None uses torch's default generator
    (so ``torch.manual_seed`` gives the same samples as openai-whisper).
    """
    if single := mel.ndim == 2:
        mel = mel.unsqueeze(0)
    _check_supported(options)
    if options.fp16 and mel.device.type == "cpu":
        # whisper would compute in float16 on the CPU; DecoderSession computes float32 only there
        raise NotImplementedError(
            "decode_cpp does not support fp16=True on CPU (DecoderSession computes in float32 on CPU); "
            "pass DecodingOptions(fp16=False), as whisper.transcribe does on CPU"
        )
    results = _run(compat.plan(model, options), model, mel, session, seed)
    return results[0] if single else results


def _detect_language(p: compat.TaskPlan, session, tokens: Tensor):
    """DecodingTask's language detection with the decoder step in C++ (DecoderSession.detect_language)."""
    options, tokenizer = p.options, p.tokenizer
    n_audio = tokens.shape[0]
    languages = [options.language] * n_audio
    language_probs = None
    if options.language is None or options.task == "lang_id":
        if tokenizer.language is None or tokenizer.language_token not in tokenizer.sot_sequence:
            raise ValueError("This model doesn't have language tokens so it can't perform lang id")
        codes = tokenizer.all_language_codes
        ids = torch.tensor(tokenizer.all_language_tokens, dtype=torch.long)
        language_tokens, probs = session.detect_language(tokenizer.sot, ids)
        probs = probs.cpu().tolist()
        language_probs = [dict(zip(codes, row)) for row in probs]
        languages = [max(p, key=p.get) for p in language_probs]
        if options.language is None:
            tokens[:, p.sot_index + 1] = language_tokens.cpu()  # write the language tokens
    return languages, language_probs


def _run(p: compat.TaskPlan, model: Whisper, mel: Tensor, session, seed: Optional[int]) -> List[DecodingResult]:
    """DecodingTask.run with its token loop in C++ (DecoderSession.decode)."""
    options, tokenizer = p.options, p.tokenizer
    n_audio = mel.shape[0]

    audio_features = compat.audio_features(p, mel)  # encoder forward pass, unless mel is encoded already
    n_group = p.n_group
    if session is None:
        session = decoder_session(model.decoder)
    # cross-attention K/V, once for this audio window; each audio gets n_group rows
    session.set_audio(audio_features, 1 if options.task == "lang_id" else n_group)
    tokens = torch.tensor([p.initial_tokens]).repeat(n_audio, 1)
    languages, language_probs = _detect_language(p, session, tokens)
    if options.task == "lang_id":
        return [
            DecodingResult(audio_features=features, language=language, language_probs=probs)
            for features, language, probs in zip(audio_features, languages, language_probs)
        ]

    tokens = tokens.repeat_interleave(n_group, dim=0).to(audio_features.device)
    loop_options = _loop_options(p)
    if seed is not None:
        loop_options.seed = int(seed)
    tokens, sum_logprobs, no_speech_probs, fin_tokens, fin_sums, fin_audio = session.decode(tokens, loop_options)
    no_speech_probs = no_speech_probs.tolist()[::n_group]

    tokens = tokens.reshape(n_audio, n_group, -1)
    sum_logprobs = sum_logprobs.reshape(n_audio, n_group)
    finished = None
    if options.beam_size is not None:  # hand the C++ beam search's finished candidates to whisper's finalize
        finished = [{} for _ in range(n_audio)]
        for seq, score, audio in zip(fin_tokens, fin_sums, fin_audio):
            finished[audio][tuple(seq.tolist())] = score
    tokens, sum_logprobs = compat.finalize(p, tokens, sum_logprobs, finished)
    tokens = [[t[p.sample_begin : (t == tokenizer.eot).nonzero()[0, 0]] for t in s] for s in tokens]

    selected = compat.rank(p, tokens, sum_logprobs)
    tokens = [t[i].tolist() for i, t in zip(selected, tokens)]
    texts = [tokenizer.decode(t).strip() for t in tokens]
    sum_logprobs = [lp[i] for i, lp in zip(selected, sum_logprobs)]
    avg_logprobs = [lp / (len(t) + 1) for t, lp in zip(tokens, sum_logprobs)]

    return [
        DecodingResult(
            audio_features=features,
            language=language,
            tokens=toks,
            text=text,
            avg_logprob=avg_logprob,
            no_speech_prob=no_speech_prob,
            temperature=options.temperature,
            compression_ratio=compression_ratio(text),
        )
        for text, language, toks, features, avg_logprob, no_speech_prob in zip(
            texts, languages, tokens, audio_features, avg_logprobs, no_speech_probs
        )
    ]
