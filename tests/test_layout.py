"""The house's rules, read from the source with ``ast``: no import circle anywhere in ``googlenet/`` (imports inside
functions count: a lazy import only defers a circle), no private name (``_x``) imported across files, and
foreign formats read only under ``googlenet/pretrained/``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "googlenet"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement in the file, resolved to our modules."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # "from . import x" imports the module x when there is one
                sub = f"{target}.{a.name}"
                out.append((sub, []) if sub in known else (target, [a.name]))
    return [(t, names) for t, names in out if t in known]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t, _ in imports(m, p, set(mods))} - {m} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_circle_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_holds_lazy_and_relative_imports():
    g = graph()
    assert "googlenet.weights" in g["googlenet.pretrained"]  # a top-level relative import
    assert "googlenet.pretrained.bvlc" in g["googlenet.cli.convert"] or \
        "googlenet.pretrained" in g["googlenet.cli.convert"]  # imports inside run()


def test_no_import_circle_in_the_package():
    assert cycles(graph()) == []


def test_no_private_name_is_imported_from_another_file():
    mods = modules()
    leaks = [f"{m} imports {n} from {t}" for m, p in mods.items() for t, names in imports(m, p, set(mods))
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert leaks == []


def test_foreign_formats_are_read_only_under_pretrained():
    g = graph()
    readers = {m for m in g if m.startswith("googlenet.pretrained.")} - {"googlenet.pretrained.fetch"}
    for reader in readers:  # a reader depends on the project's format and the model registry, not on the CLI
        assert not {d for d in g[reader] if d.startswith(("googlenet.cli", "googlenet.serve", "googlenet.train"))}
    assert not {d for d in g["googlenet.weights"] if d.startswith("googlenet.pretrained")}
    assert not (PACKAGE / "convert.py").exists() and not (PACKAGE / "inception5h.py").exists()
