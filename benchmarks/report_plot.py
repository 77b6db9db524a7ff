"""The PNG of a run: per section, device, weights kind and configuration, each implementation's speedup over
openai-whisper per model, with the speedup the floor allows marked."""

import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

from sections.rows import CPP, FAST, FW, FW_INT8, HF, HYBRID, IMPLS, OPENAI, UNITS, baseline_key, config_label


def plot(meta: Dict, rows: List[Dict], path: Path) -> None:
    """One panel per section, device, weights kind and configuration: bars of each implementation's
    speedup over openai-whisper per model, the speedup the floor allows as a dashed line, failures as
    red crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    panels = OrderedDict()
    for r in rows:
        panels.setdefault((r["section"], r["device"], r["weights"] == "random", config_label(r)), []).append(r)
    panels = [(k, g) for k, g in panels.items() if any(r["impl"] != OPENAI for r in g)]
    base = {baseline_key(r, True): r for r in rows if r["impl"] == OPENAI and r["status"] == "ok"}
    colors = {HF: "tab:orange", FAST: "tab:blue", HYBRID: "tab:cyan", CPP: "tab:green", FW: "tab:purple",
              FW_INT8: "tab:pink"}
    fig, axes = plt.subplots(max(1, math.ceil(len(panels) / 2)), 2, figsize=(13, 3.6 * max(1, math.ceil(len(panels) / 2))),
                             squeeze=False)
    for ax, ((section, device, random_weights, config), group) in zip(axes.flat, panels):
        models = list(OrderedDict.fromkeys(r["model"] for r in group))
        impls = [i for i in IMPLS if i != OPENAI and any(r["impl"] == i for r in group)]
        width = 0.8 / max(1, len(impls))
        labelled, heights = set(), [1.0]
        for j, impl in enumerate(impls):
            for i, model in enumerate(models):
                row = next((r for r in group if r["model"] == model and r["impl"] == impl), None)
                x = i - 0.4 + width * (j + 0.5)
                if row is None:
                    continue
                if row["status"] == "ok" and row["speedup_vs_openai"]:
                    speedup = row["speedup_vs_openai"]
                    ax.bar(x, speedup - 1, width, bottom=1, color=colors.get(impl, "grey"),
                           label=None if impl in labelled else impl)
                    ax.annotate(f"{speedup:.3g}x", (x, speedup), ha="center", va="bottom" if speedup >= 1 else "top",
                                fontsize=7)
                    labelled.add(impl)
                    heights.append(speedup)
                elif row["status"] == "failure":
                    ax.plot(x, 1, "rx", markersize=10, label=None if "failure" in labelled else "failure (no time)")
                    labelled.add("failure")
                else:
                    ax.annotate(row["status"], (x, 1), ha="center", va="bottom", fontsize=6, rotation=90)
        for i, model in enumerate(models):
            row = next((r for r in group if r["model"] == model and r["floor"]), None)
            ref = base.get(baseline_key(row)) if row else None
            if ref:
                bound = row["floor"] / ref["value"] if section == "longform" else ref["value"] / row["floor"]
                ax.hlines(bound, i - 0.45, i + 0.45, colors="black", linestyles="dashed",
                          label=None if "floor" in labelled else "floor (largest possible speedup)")
                labelled.add("floor")
                heights.append(bound)
        ax.axhline(1, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models)
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_yscale("log")
        ax.set_ylim(min(heights) / 1.6, max(heights) * 1.6)
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{section} ({UNITS[section]}), {config}, {device}, {'random' if random_weights else 'real'} weights",
                     fontsize=10)
        ax.set_ylabel("speedup vs openai-whisper")
        if labelled - {"floor"}:
            ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"fastwhisper benchmark, {meta['gpu'] or 'CPU'}, commit {meta['commit'][:12]}, {meta['date']}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Title": "fastwhisper benchmark", "Description": f"commit {meta['commit']}"})
    plt.close(fig)
