"""The package's structure: sub-packages by concern, imports running one way, modules of one
responsibility (README, "Layout"). Imports are read from the source, lazy ones (inside
functions) included, so that a cycle cannot hide behind an import moved into a function."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dlhisto_core"

LAYERS = ["base", "io", "imaging", "classic", "evaluation", "ml", "models", "dl", "share", "view", "study", "cli"]
"""Sub-packages from the ground up: each may import those before it, never those after."""

MAX_LINES = 700


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, source: str | None = None) -> set[str]:
    """The dlhisto_core modules (or packages) that ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dlhisto_core")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("dlhisto_core"):
                target = node.module
            else:
                continue
            for alias in node.names:  # "from .x import y": y may be a module of package x
                submodule = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / (submodule.replace(".", "/") + ".py")).exists() or \
                    (PACKAGE.parent / submodule.replace(".", "/")).is_dir()
                found.add(submodule if is_module else target)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), and self-imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in edges:
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges.get(node, ()):
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_sub_package_of_a_known_layer():
    top_level = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert top_level == []
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert packages == sorted(LAYERS)
    for package in LAYERS:
        docstring = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
        assert docstring and "module" in docstring, f"{package}/__init__.py says what it holds"


def test_no_import_cycle():
    assert cycles(graph()) == []


def against_layers(edges: dict[str, set[str]]) -> list[str]:
    return [f"{module} imports {target}" for module, targets in edges.items() for target in targets
            if layer(module) is not None and layer(target) is not None and layer(target) > layer(module)]


def test_imports_run_down_the_layers():
    assert against_layers(graph()) == []


def test_the_package_root_holds_only_the_public_names():
    """Modules may take ``__version__`` from the root; the root imports nothing at import time."""
    root = ast.parse((PACKAGE / "__init__.py").read_text())
    assert [node for node in root.body if isinstance(node, ast.ImportFrom)] == []
    for module, targets in graph().items():
        assert "dlhisto_core" not in targets or module == "dlhisto_core" or \
            "__version__" in (PACKAGE.parent / (module.replace(".", "/") + ".py")).read_text(), module


def test_modules_stay_under_700_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"a"}}, [["a"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected


def test_a_lazy_import_against_the_layers_is_seen():
    """io importing dl inside a function, and the cycle it closes, are both caught."""
    tables = PACKAGE / "io" / "tables.py"
    edges = graph()
    edges["dlhisto_core.io.tables"] = imports(tables, tables.read_text() + "\n\ndef _probe():\n"
                                              "    from ..dl import prediction\n")
    assert against_layers(edges) == ["dlhisto_core.io.tables imports dlhisto_core.dl.prediction"]
    assert any("dlhisto_core.io.tables" in group and "dlhisto_core.dl.prediction" in group for group in cycles(edges))
