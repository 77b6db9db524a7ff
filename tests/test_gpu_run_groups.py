"""scripts/gpu_run.sh's PYTEST_GROUP parts together hold every test file, each once.

The GPU machine runs the suite as these parts (one call each); a test file left out of them would never
run on the GPU."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pytest_groups_cover_every_test_file_once():
    script = (ROOT / "scripts" / "gpu_run.sh").read_text()
    groups = dict(re.findall(r'^\s*(\w+)\) PYTEST_ARGS="([^"]+)"', script, flags=re.MULTILINE))
    assert set(groups) == {"decoder", "rest", "real"}
    listed = [Path(f).name for files in groups.values() for f in files.split()]
    assert len(listed) == len(set(listed)), f"a file in two groups: {sorted(listed)}"
    on_disk = sorted(p.name for p in (ROOT / "tests").glob("test_*.py"))
    assert sorted(listed) == on_disk
