"""What `kd` costs before it does anything, and the layering that keeps it so: the core (kd/) imports neither the
runtime layer (engines/) nor its plugins (export/, bench/), which stand on both; the composition root (cli/) is
imported by none of them, and the static import graph has no cycle."""

import ast
import graphlib
import json
import subprocess
import sys

import pytest
from conftest import ENV, REPO

PACKAGES = ("kd", "engines", "export", "bench", "cli")
# what each package may import of the others: the core nothing; the runtime layer the core; export and bench the
# runtime layer and the core (bench also export); the composition root all
ALLOWED = {"kd": set(), "engines": {"kd"}, "export": {"kd", "engines"}, "bench": {"kd", "engines", "export"},
           "cli": {"kd", "engines", "export", "bench"}}
ENGINES = ("onnxruntime", "openvino", "nncf")
HEAVY = ("torch", "transformers", "scipy", "sklearn", "matplotlib", "datasets", "onnx", *ENGINES)


def imported_by(argv: list[str]) -> tuple[int, list[str]]:
    """kd's exit code for `argv`, run in a fresh interpreter, and the heavy top-level modules it had imported."""
    code = f"""
import json, sys
from cli.main import main
try:
    rc = main({argv!r})
except SystemExit as exc:
    rc = exc.code
print(json.dumps([rc, sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))]))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rc, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return rc, modules


@pytest.mark.parametrize("argv", [["--help"], ["train-all", "--help"], ["export", "--help"], ["bench", "--help"],
                                  ["bench-check", "--help"], ["study", "--help"]], ids=" ".join)
def test_help_imports_no_inference_engine_and_no_torch(argv):
    rc, modules = imported_by(argv)
    assert rc == 0 and modules == [], modules


@pytest.mark.parametrize("argv", [["train-all", "--preset", "smoke", "--set", "distill.temprature=3"],
                                  ["train-all", "--preset", "tiny"],
                                  ["export", "--preset", "smoke", "--set", "opset=seventeen"],
                                  ["study", "tiny"]], ids=" ".join)
def test_a_config_error_imports_no_inference_engine(argv):
    rc, modules = imported_by(argv)
    assert rc == 2 and not set(modules) & set(ENGINES), modules


def module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports anywhere in its text (function-level imports included)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports pkg.mod where that is a module, else pkg itself
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def test_the_core_imports_no_plugin_and_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"kd.config", "engines.sessions.openvino", "bench.gate", "cli.main"} <= set(graph)
    crossings = sorted((a, b) for a, edges in graph.items() for b in edges
                       if b.split(".")[0] != a.split(".")[0] and b.split(".")[0] not in ALLOWED[a.split(".")[0]])
    assert crossings == []
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError, naming the cycle


def test_the_packages_import_alone_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", "import kd, engines, export, bench, cli"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
