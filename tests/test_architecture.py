"""The package's shape: no import cycles, stages apart, small modules, Python's ssl not shadowed."""

import ast
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dfflab"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the dfflab modules it imports, imports inside functions included."""
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for t in names:
                # importing a submodule runs its package's __init__ too, but a package's own
                # modules importing it is not a cycle of ours
                if t in mods and t != m and not (mods[t].name == "__init__.py" and m.startswith(t + ".")):
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_anywhere_in_the_package():
    graph = import_graph()
    assert "dfflab.detector.trainer" in graph and graph["dfflab.detector.trainer"]  # the graph is real
    assert cycles(graph) == []


def test_stages_never_reach_into_the_centralized_stage():
    graph = import_graph()
    for m, targets in graph.items():
        if m.split(".")[1:2] in (["ssl"], ["uq"], ["generative"], ["federated"], ["detector"], ["data"], ["models"],
                                 ["train"]):
            bad = sorted(t for t in targets if t.startswith("dfflab.centralized"))
            assert not bad, f"{m} imports {bad}"


def test_only_cli_modules_and_the_pipeline_import_cli_modules():
    graph = import_graph()
    cli = {m for m in graph if m.endswith(".cli") or m == "dfflab.cli"}
    assert "dfflab.data.cli" in cli and "dfflab.cli" in cli
    for m, targets in graph.items():
        if m in cli or m in ("dfflab.pipeline", "dfflab.__main__"):
            continue
        assert not targets & cli, f"{m} imports {sorted(targets & cli)}"


def test_pythons_ssl_is_not_shadowed():
    """No ``ssl`` module or package where Python looks first (the repository root, a script's folder)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    for where in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
        assert not (where / "ssl.py").exists() and not (where / "ssl").exists(), where
        code = "import ssl; ssl.create_default_context(); print(ssl.__file__)"
        out = subprocess.run([sys.executable, "-c", code], cwd=where, capture_output=True, text=True, check=True)
        assert Path(out.stdout.strip()).resolve().is_relative_to(stdlib), out.stdout
