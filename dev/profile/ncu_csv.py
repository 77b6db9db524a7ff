"""Reading Nsight Compute's ``--csv`` output (one line per kernel and metric) for the ncu_* summaries."""
import collections
import csv
import re
from pathlib import Path
from typing import Dict, Tuple


def read_ncu_csv(path: Path) -> "collections.OrderedDict[Tuple[str, str, str], Dict[str, float]]":
    """{(ID, kernel name, grid): {metric: value}} in launch order; the lines before ncu's header are skipped."""
    lines = Path(path).read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    kernels = collections.OrderedDict()
    for r in csv.DictReader(lines[header:]):
        metrics = kernels.setdefault((r["ID"], r["Kernel Name"], r["Grid Size"]), {})
        try:
            metrics[r["Metric Name"]] = float(r["Metric Value"].replace(",", ""))
        except ValueError:  # "n/a" where a metric does not apply to a kernel: left out
            pass
    return kernels


def short_kernel_name(name: str, width: int = 70) -> str:
    """The kernel's name without its argument list, 'void ' and our anonymous namespace, cut to ``width``."""
    return re.sub(r"\(.*", "", name).replace("fastwhisper::<unnamed>::", "").replace("void ", "")[:width]
