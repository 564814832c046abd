"""The import graph of steer and retrieval: acyclic, and every edge pointing down the layers.

Every import counts: at module level, inside a function, and under ``if TYPE_CHECKING:`` (an import
circle hidden behind TYPE_CHECKING is still a circle in the design). The modules are parsed with
``ast``, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (rank, module prefixes). A module may import modules of a lower rank, or of its own rank in its own
# folder (package). The finer ranks below the design's six say what the code needs:
RANKS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("steer.errors", "steer.settings", "steer.protocol", "steer.registry", "steer.identity", "steer.fence",
         "steer.version")),
    (1, ("steer.storage",)),  # persistence: the database seam, the migrations, each table's SQL
    (2, ("steer.pipeline.ports",)),  # the ports: protocols over storage's row types and the base
    # the contracts of the pipeline's parts: the stage (Context, registry) and the scorer and upstream
    # registries (the package modules only; their implementations are domain code)
    (3, ("steer.pipeline.stage", "steer.scorers:package", "steer.upstreams:package")),
    (4, ("steer.methods", "steer.scorers", "steer.upstreams")),  # domain: methods, scorers, upstreams
    (5, ("steer.pipeline.policy", "steer.pipeline.runner")),  # policies and the runner
    (6, ("steer.server",)),
    (7, ("steer.server.ui",)),  # the inspector: pages over the server's services
    (8, ("steer.server.app",)),  # assembles the app: the API's routes and the inspector's
    (9, ("steer.testing",)),  # the stub upstream: bench and tests use it
    (10, ("steer.bench",)),
    (11, ("steer.evals",)),  # evaluations use bench's report helpers
    (12, ("steer.cli", "steer.terminal", "steer.inprocess", "steer.client", "steer.__main__", "steer:package")),
]  # fmt: skip
RETRIEVAL = -1  # retrieval/ is below everything and imports nothing from steer

# edges the ranks do not allow, each with its reason (none)
EXCEPTIONS: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    out = {}
    for top in ("steer", "retrieval"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def is_package(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def rank(name: str, mods: dict[str, Path]) -> int:
    if name == "retrieval" or name.startswith("retrieval."):
        return RETRIEVAL
    best: tuple[int, int] | None = None  # (prefix length, rank): the longest matching prefix wins
    for r, prefixes in RANKS:
        for prefix in prefixes:
            base, _, kind = prefix.partition(":")
            if kind == "package":
                hit = name == base and is_package(name, mods)
            else:
                hit = name == base or name.startswith(base + ".")
            if hit and (best is None or len(base) + (1 if kind else 0) > best[0]):
                best = (len(base) + (1 if kind else 0), r)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to RANKS")
    return best[1]


def folder(name: str, mods: dict[str, Path]) -> str:
    """The folder a module lives in, as a package name (a package's __init__ lives in its own folder)."""
    if is_package(name, mods):
        return name
    return name.rsplit(".", 1)[0] if "." in name else ""


def resolve(target: str, mods: dict[str, Path]) -> str | None:
    """The module an import names (``from a.b import c``: ``a.b.c`` when that is a module, else ``a.b``)."""
    while target and target not in mods:
        target = target.rsplit(".", 1)[0] if "." in target else ""
    return target or None


def imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every steer/retrieval module ``name`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), str(path))
    package = folder(name, mods)
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            if target.split(".")[0] not in ("steer", "retrieval"):
                continue
            found = resolve(target, mods)
            if found is not None and found != name:
                out.add(found)
    return out


def graph() -> tuple[dict[str, Path], dict[str, set[str]]]:
    mods = modules()
    return mods, {name: imports(name, path, mods) for name, path in mods.items()}


def allowed(src: str, dst: str, mods: dict[str, Path]) -> bool:
    rs, rd = rank(src, mods), rank(dst, mods)
    if src.startswith("retrieval"):
        return dst.startswith("retrieval")
    if rd < rs:
        return True
    return rd == rs and folder(src, mods) == folder(dst, mods)


def test_every_import_points_down_the_layers() -> None:
    mods, edges = graph()
    bad = [
        f"{src} (rank {rank(src, mods)}) imports {dst} (rank {rank(dst, mods)})"
        for src, targets in sorted(edges.items())
        for dst in sorted(targets)
        if not allowed(src, dst, mods) and (src, dst) not in EXCEPTIONS
    ]
    assert not bad, "imports against the layers:\n  " + "\n  ".join(bad)


def test_the_import_graph_has_no_cycle() -> None:
    _, edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_a_stage_never_imports_another_method_and_no_stage_or_scorer_sees_the_server() -> None:
    _, edges = graph()
    for src, targets in edges.items():
        if src.startswith(("steer.methods.", "steer.scorers")):
            for dst in targets:
                assert not dst.startswith("steer.server"), f"{src} imports {dst}"
                if dst.startswith("steer.methods.") and dst.count(".") > 2:  # another method's module
                    assert src.startswith(f"steer.methods.{dst.split('.')[2]}."), f"{src} imports {dst}"


def test_the_checker_sees_typing_only_and_function_local_imports(tmp_path: Path) -> None:
    mods = modules()
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from steer.server.services import Services\n"
        "def f():\n    from steer.pipeline.runner import Planner\n"
    )
    assert imports("steer.pipeline.stage", probe, mods) == {"steer.server.services", "steer.pipeline.runner"}
    assert not allowed("steer.pipeline.stage", "steer.server.services", mods)
    assert not allowed("steer.methods.memory.remember", "steer.methods.align.stage", mods)
    assert not allowed("retrieval.store", "steer.storage.database", mods)
