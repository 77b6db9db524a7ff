"""The random-weight rows of one model size on one device: fp32 references from openai-whisper first, then
each implementation built, checked, timed and freed in turn (so that its peak memory is its own)."""

from typing import Callable, Dict, List

import torch

from common import common_prefix, encoder_dims, error_status, free_device_memory, make_mel, relative_error, tf32_disabled
from sections import ctranslate2_rows
from sections.models import Context, HFDecoder, build_fastwhisper, build_hf, build_openai, decode_plan, whisper_decoder
from sections.rows import CPP, FAST, FW, HF, HF_LOGITS_TOL, HYBRID, OPENAI, Runner, WrongOutput, new_row, precision
from sections.timed_rows import decoder_row, encoder_row, longform_row, not_batched_openai


def bench_random(runner: Runner, name: str, device: str, sections: List[str], impls: List[str], ceilings,
                 batch_sizes: List[int], modes: List[str], longform_modes: List[str], long_audio) -> None:
    """Every random-weight row of one model on one device, implementation by implementation (each
    built, measured and freed before the next, so its peak memory is its own)."""
    args = runner.args
    ctx = Context(name, device, args, ceilings)
    impls = [i for i in impls if i in runner.args.impls]
    refs: Dict = {}
    ref_error = None
    with torch.no_grad():
        openai = None
        try:
            openai = build_openai(ctx)
            with tf32_disabled():
                if "encoder" in sections:
                    refs["encoder"] = {b: openai.encoder(make_mel(encoder_dims(name), b).to(device)).float().cpu()
                                       for b in batch_sizes}
                if "decoder" in sections:
                    x32 = ctx.features.to(device)
                    refs["plan"] = decode_plan(openai, ctx.options(args.check_tokens, 1, False))
                    for mode in modes:
                        beam = 5 if mode == "beam5" else 1
                        tokens = whisper_decoder(openai)(x32, ctx.options(args.check_tokens, beam, False))[0]
                        refs[f"fp32_{mode}"] = tokens
                    greedy = refs.get("fp32_greedy") or whisper_decoder(openai)(
                        x32, ctx.options(args.check_tokens, 1, False))[0]
                    refs["fp32_greedy"] = greedy
                    refs["fp32_logits"] = openai.logits(
                        torch.tensor([refs["plan"]["initial_tokens"] + greedy], device=device), x32).float().cpu()
            if "longform" in sections and "plan" not in refs:
                refs["plan"] = decode_plan(openai, ctx.options(args.check_tokens, 1, False))
        except Exception as exc:  # noqa: BLE001
            ref_error = f"no openai-whisper reference: {error_status(exc)}"

    def fp32_tokens_check(decode):
        """The C++ loop's fp32 tokens must equal openai-whisper's."""
        def check(mode):
            beam = 5 if mode == "beam5" else 1
            with torch.no_grad(), tf32_disabled():
                ours = decode(ctx.features.to(device), args.check_tokens, beam, False)[0]
            same = ours == refs[f"fp32_{mode}"]
            if not same:
                raise WrongOutput(f"wrong output: fp32 tokens differ from openai-whisper's at token "
                                  f"{common_prefix(ours, refs[f'fp32_{mode}'])} of {args.check_tokens}")
            return {"fp32_tokens_equal_to_openai": True, "fp32_tokens_checked": args.check_tokens}
        return check

    def rows_for(impl_key: str, build: Callable, encode: Callable, decoders: Dict[str, Callable],
                 checks: Dict[str, Callable], before_timing: Callable = lambda model: model):
        """encode(model, x); decoders: row impl -> decode(model, features, tokens, beam, fp16);
        checks: row impl -> check(model, mode) run before before_timing(model)."""
        model, error = None, ref_error
        if error is None and not runner.past_deadline():  # past it, every row is recorded as skipped
            try:
                model = build()
            except Exception as exc:  # noqa: BLE001
                error = f"build failed: {error_status(exc)}"
        decoder_checks = {}
        if "decoder" in sections and model is not None:
            for impl, check in checks.items():
                for mode in modes:
                    try:
                        decoder_checks[impl, mode] = (check(model, mode) if error is None else None, None)
                    except Exception as exc:  # noqa: BLE001
                        message = str(exc) if isinstance(exc, WrongOutput) else error_status(exc)
                        decoder_checks[impl, mode] = (None, message)
        if error is None and model is not None:
            try:
                model = before_timing(model)
            except Exception as exc:  # noqa: BLE001
                error = f"conversion failed: {error_status(exc)}"
        enc = (lambda x: encode(model, x))
        if "encoder" in sections and impl_key in (OPENAI, HF, FAST) and impl_key in impls:
            for batch in batch_sizes:
                encoder_row(runner, ctx, impl_key, enc, batch, refs.get("encoder", {}).get(batch), error)
        if "decoder" in sections:
            for impl, decode in decoders.items():
                if impl == HYBRID or impl not in checks:
                    continue
                for mode in modes:
                    result, check_error = decoder_checks.get((impl, mode), (None, None))

                    def check(result=result, check_error=check_error):
                        if check_error:
                            raise WrongOutput(check_error)
                        return dict(result or {})
                    decoder_row(runner, ctx, impl, lambda f, n, b, h, decode=decode: decode(model, f, n, b, h),
                                mode, refs, check, error)
        if "longform" in sections:
            for impl, decode in decoders.items():
                for mode in longform_modes:
                    if impl not in args.longform_rows.get(mode, ()):
                        continue
                    longform_row(runner, ctx, impl, enc,
                                 lambda f, n, decode=decode: decode(model, f, n, 1, ctx.gpu), mode, long_audio, error)
        del model, enc
        free_device_memory(device)

    def whisper_fixed(decoder=None):
        def decode(model, features, tokens, beam, fp16):
            return whisper_decoder(model, decoder)(features, ctx.options(tokens, beam, fp16))
        return decode

    if OPENAI in impls:
        def openai_check(model, mode):
            return {"reference": "openai-whisper fp32 tokens"}
        rows_for(OPENAI, lambda: openai, lambda m, x: m.encoder(x), {OPENAI: whisper_fixed()}, {OPENAI: openai_check})
        if "longform" in sections and "batched" in longform_modes:
            not_batched_openai(runner, new_row("longform", name, OPENAI, device, mode="batched",
                                               batch=args.longform_batch, precision=precision(device)))
    del openai
    free_device_memory(device)

    if any(i in impls for i in (FAST, HYBRID, CPP)):
        decoders = {impl: whisper_fixed(kind) for impl, kind in ((HYBRID, "torch"), (CPP, "cpp")) if impl in impls}
        checks = {}
        if CPP in impls:
            def cpp_check(model, mode):
                return fp32_tokens_check(lambda f, n, b, h: whisper_fixed("cpp")(model, f, n, b, h))(mode)
            checks[CPP] = cpp_check
        rows_for(FAST, lambda: build_fastwhisper(ctx), lambda m, x: m.encoder(x), decoders, checks)

    if HF in impls:
        hf_state = {}

        def hf_build():
            model = build_hf(ctx)
            hf_state["decoder"] = HFDecoder(model, refs["plan"]) if "plan" in refs else None
            return model

        def hf_check(model, mode):
            if mode != "greedy":  # HF applies its filters after log_softmax: beam scores differ by design
                return {"note": "beam tokens not compared (HF's beam scores are normalised before its filters)"}
            decoder = hf_state["decoder"]
            x32 = ctx.features.to(device)
            with torch.no_grad(), tf32_disabled():
                logits = decoder.logits(x32, refs["plan"]["initial_tokens"] + refs["fp32_greedy"]).float().cpu()
                tokens = decoder(x32, args.check_tokens, 1)[0]
            err = relative_error(logits, refs["fp32_logits"])
            agree = common_prefix(tokens, refs["fp32_greedy"])
            if not err <= HF_LOGITS_TOL or agree == 0:
                raise WrongOutput(f"wrong output: fp32 logits relative error {err:.2e} (tolerance {HF_LOGITS_TOL:g}), "
                                  f"greedy tokens equal to openai-whisper's for {agree} of {args.check_tokens}")
            return {"fp32_logits_rel_err": err, "fp32_greedy_tokens_equal_to_openai": agree,
                    "fp32_tokens_checked": args.check_tokens}

        def hf_decode(model, features, tokens, beam, fp16):
            return hf_state["decoder"](features, tokens, beam)

        def hf_half(model):
            return model.half() if ctx.gpu else model

        rows_for(HF, hf_build, lambda m, x: m.model.encoder(x).last_hidden_state, {HF: hf_decode}, {HF: hf_check},
                 hf_half)

    if FW in impls and ("encoder" in sections or "decoder" in sections):
        ctranslate2_rows.bench_random(runner, ctx, [s for s in sections if s != "longform"], batch_sizes, modes, refs,
                                      ref_error)
    del ctx
    free_device_memory(device)
