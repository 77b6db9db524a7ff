"""A run's outputs: speedups over openai-whisper and distances from the floors, the markdown report (a summary
table per section, device and weights kind, then every row) and the JSON, MD and PNG files."""

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional

from common import ceilings_text, error_status, fmt, is_cuda, json_safe
from report_plot import plot
from sections.rows import IMPLS, OPENAI, baseline_key, config_label


def add_speedups(rows: List[Dict]) -> None:
    """speedup_vs_openai (openai-whisper's ms over the row's, or the row's RTFx over openai-whisper's)
    and x_floor (how many times the figure is off its floor or ceiling)."""
    base = {baseline_key(r, True): r["value"] for r in rows if r["impl"] == OPENAI and r["status"] == "ok"}
    for r in rows:
        r["speedup_vs_openai"] = r["x_floor"] = None
        if r["status"] != "ok" or not r["value"]:
            continue
        higher_is_better = r["section"] == "longform"
        if r["floor"]:
            r["x_floor"] = r["floor"] / r["value"] if higher_is_better else r["value"] / r["floor"]
        ref = base.get(baseline_key(r))
        if ref and r["impl"] != OPENAI:
            r["speedup_vs_openai"] = r["value"] / ref if higher_is_better else ref / r["value"]


def table_title(r: Dict) -> str:
    where = r["device"] + (": fp16 activations (HF: fp16 weights)" if is_cuda(r["device"]) else ": fp32")
    if r["section"] == "encoder":
        return f"Encoder, ms per 30-s window ({where}, random weights)"
    if r["section"] == "decoder":
        return (f"Decoder, ms per token at batch 1, {r['tokens']} tokens per call, EOT suppressed ({where}, random "
                "weights; fastwhisper-hybrid decodes with openai-whisper's decoder: its figure is openai-whisper's)")
    if r["weights"] == "random":
        return (f"Long-form RTFx, random weights, FIXED BUDGET of {r.get('tokens_per_window')} tokens per 30-s "
                f"window, greedy, no timestamps ({where}; audio decoding and log-mel included)")
    return (f"Long-form RTFx, real weights, transcribe() of {r.get('audio')} ({r.get('audio_s') or 0:.1f} s) "
            f"({where}; audio decoding and log-mel included)")


def sig(value: Optional[float]) -> str:
    """3 significant digits without exponents: 1530, 153, 15.3, 1.53, 0.153, 0.0153."""
    if value is None:
        return "-"
    digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:.{digits}f}"


def cell(row: Optional[Dict]) -> str:
    if row is None:
        return ""
    if row["status"] == "ok":
        text = sig(row["value"])
        if row["check"].get("text") in ("differs", "unchecked"):
            text += f" ({row['check']['text']})"
        return text
    return {"failure": "FAIL", "not available": "n/a", "skipped": "skipped"}.get(row["status"], row["status"])


def summary_table(title: str, rows: List[Dict]) -> List[str]:
    """One row per (model, configuration), one column per implementation, the floor, the speedups."""
    section = rows[0]["section"]
    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    others = [i for i in impls if i != OPENAI]
    header = (["model", "batch" if section == "encoder" else "mode"] + impls
              + ["ceiling" if section == "longform" else "floor"] + [f"{i} vs openai" for i in others])
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    grouped = OrderedDict()
    for r in rows:
        model = r["model"] if r["weights"] == "random" else f"{r['model']} ({r['weights']})"
        grouped.setdefault((model, config_label(r)), {})[r["impl"]] = r
    for (model, config), by_impl in grouped.items():
        floors = [r["floor"] for r in by_impl.values() if r["floor"] is not None]
        cells = ([model, config] + [cell(by_impl.get(i)) for i in impls] + [sig(floors[0] if floors else None)]
                 + [fmt(by_impl[i].get("speedup_vs_openai") if i in by_impl else None, "{:.2f}x") for i in others])
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def table_groups(rows: List[Dict]):
    """(title, rows) of each summary table: one per section, device and weights kind. The title takes its
    settings (tokens per call or per window) from the group's first measured row: a row that was not
    available (an implementation without that mode) carries none."""
    groups = OrderedDict()
    for r in rows:
        groups.setdefault((r["section"], r["device"], r["weights"] == "random"), []).append(r)
    return [(table_title(next((r for r in group if r["status"] == "ok"), group[0])), group)
            for group in groups.values()]


ALL_COLUMNS = [
    ("section", "section", "{}"), ("device", "device", "{}"), ("model", "model", "{}"), ("weights", "weights", "{}"),
    ("impl", "impl", "{}"), ("batch", "batch", "{}"), ("mode", "mode", "{}"), ("value", "value", "{:.4g}"),
    ("unit", "metric", "{}"), ("floor/ceiling", "floor", "{:.4g}"), ("x floor", "x_floor", "{:.1f}"),
    ("vs openai", "speedup_vs_openai", "{:.2f}x"), ("peak MiB", "peak_mib", "{:.0f}"), ("audio s", "audio_s", "{:.0f}"),
    ("status", "status", "{}"),
]


def check_summary(row: Dict) -> str:
    if row["error"]:
        return row["error"]
    return "; ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["check"].items())


def markdown_report(meta: Dict, rows: List[Dict]) -> str:
    v, s = meta["versions"], meta["settings"]
    lines = [f"# fastwhisper benchmark: {meta['gpu'] or 'CPU'}", "",
             f"commit `{meta['commit']}`, {meta['date']}; torch {v['torch']}, CUDA {v['cuda']}, fastwhisper "
             f"{v['fastwhisper']}, openai-whisper {v['openai-whisper']}, transformers {v['transformers']}, faster-whisper "
             f"{v.get('faster-whisper')}, ctranslate2 {v.get('ctranslate2')}; "
             f"CPU {meta['cpu']} ({meta['cpu_threads']} torch threads); {meta['elapsed_s'] or 0:.0f} s.", "",
             f"Timing: warm-up {s['warmup']}, median of {s['repeats']} timed runs ({s['encoder_repeats']} for the "
             "encoder); CUDA events on a GPU, perf_counter on the CPU; model building outside the timed region; "
             "long-form figures include audio decoding and the log-mel. A wrong output is a failure (FAIL), never "
             "a time; n/a = not available.", ""]
    lines += [f"Ceilings: {ceilings_text(meta[key])}." for key in ("ceilings", "cpu_ceilings") if meta.get(key)]
    lines += ["", "Floors: encoder max(FLOPs / GEMM rate, bytes / copy bandwidth) per window; decoder (weights + "
              "cross K/V bytes per step) / copy bandwidth per token; RTFx ceiling from those floors. \"vs openai\": "
              "speedup over openai-whisper in the same configuration (batched long-form: over its single stream).", ""]
    if meta.get("stopped"):
        lines += [f"**Stopped early: {meta['stopped']}**", ""]
    if meta.get("appended_to"):
        old = meta["appended_to"]
        lines += [f"Rows this run did not measure are kept from the run of commit `{old['commit']}`, {old['date']} "
                  "(--append).", ""]
    lines += [f"- `{impl}`: {text}" for impl, text in meta.get("impls", {}).items()] + [""]
    for title, group in table_groups(rows):
        lines += summary_table(title, group)
    failures = [r for r in rows if r["status"] == "failure"]
    if failures:
        lines += ["### Failures", ""]
        lines += [f"- {r['section']} {r['device']} {r['model']} ({r['weights']}) {r['impl']} {config_label(r)}: "
                  f"{fmt(r['error'], '{}', 300)}" for r in failures] + [""]
    lines += ["### All rows", "", "| " + " | ".join(t for t, _, _ in ALL_COLUMNS) + " | check / error |",
              "|" + "|".join("---" for _ in range(len(ALL_COLUMNS) + 1)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k), spec) for _, k, spec in ALL_COLUMNS)
                     + " | " + fmt(check_summary(r), "{}", 200) + " |")
    return "\n".join(lines) + "\n"


def output_paths(base: Path):
    return tuple(base.parent / (base.name + suffix) for suffix in (".json", ".md", ".png"))


def write_outputs(meta: Dict, rows: List[Dict], base: Path) -> None:
    """<base>.json, <base>.md and <base>.png (the PNG's failure is recorded in the JSON, not raised)."""
    add_speedups(rows)
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = output_paths(base)
    try:
        plot(meta, rows, png_path)
        meta["png"] = png_path.name
    except Exception as exc:  # noqa: BLE001 - the tables still get written
        meta["png"] = f"not written: {error_status(exc)}"
    json_path.write_text(json.dumps(json_safe({"meta": meta, "rows": rows}), indent=1) + "\n")
    md_path.write_text(markdown_report(meta, rows))
