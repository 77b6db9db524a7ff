"""The `fastwhisper-serve` command (also `python -m fastwhisper.serve`): an OpenAI-compatible speech-to-text
server on one fastwhisper model.

    fastwhisper-serve --model large-v3 --host 127.0.0.1 --port 8000 --batch_size 16 --decoder cpp

Exit status: 0 after a clean shutdown (SIGINT/SIGTERM: the requests in flight are answered first, new ones get
503); 2 for a usage error, a model that cannot be loaded or a decoder that is not available.
"""

import argparse
import sys
from typing import Optional, Sequence

from .config import MB, ServerConfig

PROG = "fastwhisper-serve"
DTYPES = ("float32", "float16", "bfloat16")
USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Serve a Whisper model through OpenAI's audio API "
                                "(/v1/audio/transcriptions, /v1/audio/translations) with continuous batching.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny.en", help="an openai name (tiny.en ... large-v3, turbo), an openai .pt "
                   "checkpoint, a Hugging Face or a CTranslate2/faster-whisper directory")
    p.add_argument("--served_model_name", default=None, help="the model id clients name (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="default cuda when available, else cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="dtype to store the weights in (default float32 "
                   "weights, computing in fp16 on a GPU as openai-whisper does)")
    p.add_argument("--batch_size", type=int, default=16, help="most windows encoded or decoded together, over "
                   "all requests in flight")
    p.add_argument("--decoder", default="torch", help="torch (openai-whisper's decoder) or cpp (fastwhisper's)")
    p.add_argument("--batch_wait", type=float, default=ServerConfig.batch_wait, help="how long a round may wait "
                   "for clients to come back with their next request, as a fraction of the last round's length "
                   "(0: never wait; more: fuller batches under load, a little more latency)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--max_upload_mb", type=float, default=25.0, help="largest upload accepted (413 above)")
    p.add_argument("--max_audio_seconds", type=float, default=3 * 3600.0, help="longest audio accepted (413 above)")
    p.add_argument("--max_queue", type=int, default=256, help="most requests in flight at once (429 above)")
    p.add_argument("--log_level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import uvicorn  # noqa: F401
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        print(f"{PROG}: error: {exc.name} is not installed: pip install 'fastwhisper[server]'", file=sys.stderr)
        return USAGE
    import torch

    import fastwhisper
    from ..decoder import check_decoder
    from .app import create_app
    from .runner import serve

    try:
        config = ServerConfig(model_name=args.served_model_name or args.model, batch_size=args.batch_size,
                              decoder=args.decoder, batch_wait=args.batch_wait,
                              max_upload_bytes=max(1, int(args.max_upload_mb * MB)),
                              max_audio_seconds=args.max_audio_seconds, max_queue=args.max_queue)
        check_decoder(args.decoder)
    except (ValueError, NotImplementedError) as exc:
        parser.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    try:
        model = fastwhisper.load_model(args.model, device=args.device, dtype=dtype)
    except (fastwhisper.ModelLoadError, RuntimeError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return USAGE
    serve(create_app(model, config), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
