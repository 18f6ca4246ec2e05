"""Imports point one way: gateway -> cluster -> shard. shard/ stays a plain engine."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "shard": {"gateway", "cluster", "ray", "aiohttp", "pysyncobj"},
    "cluster": {"gateway", "aiohttp"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(layer):
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no modules found in {layer}/"
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[layer]) for f in files}
    assert {f: b for f, b in bad.items() if b} == {}


@pytest.mark.parametrize("library, module", [("hnswlib", "hnsw.py"), ("usearch", "quantized.py"),
                                             ("faiss", "product.py")])
def test_only_one_module_imports_each_graph_library(library, module):
    users = [f for f in (ROOT / "shard").rglob("*.py") if library in imported_roots(f)]
    assert [f.name for f in users] == [module]


def test_ray_calls_live_in_runtime():
    users = sorted(f.name for f in (ROOT / "cluster").rglob("*.py") if "ray" in imported_roots(f))
    assert users == ["runtime.py"]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, by full name, wherever the import stands
    (under ``if TYPE_CHECKING:`` too): ``from shard import x`` names ``shard.x``."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_shard_layers_read_one_way():
    """local_shard.py sits on top of shard/: it imports the read path (search.py)
    and the snapshots (snapshot.py), which see it through narrow views
    (shard.view.ShardReader, snapshot.ShardState) and never import it back."""
    for name in ("search.py", "snapshot.py"):  # the two that once did, under TYPE_CHECKING
        assert "shard.local_shard" not in imported_modules(ROOT / "shard" / name), name
    users = sorted(
        str(f.relative_to(ROOT))
        for f in (ROOT / "shard").rglob("*.py")
        if f.name != "local_shard.py" and "shard.local_shard" in imported_modules(f)
    )
    assert users == []


def test_search_reads_only_the_read_view():
    """Every attribute search.py reads off a shard (a ``ShardReader`` argument) is
    declared by the view, so the read path cannot quietly widen to all of
    ``LocalShard`` again."""
    from shard.view import ShardReader

    views = [cls for cls in ShardReader.__mro__ if cls.__module__.startswith("shard.")]  # and FilterContext
    declared = {name for cls in views for name in (*vars(cls), *cls.__annotations__)}
    tree = ast.parse((ROOT / "shard" / "search.py").read_text())
    read, readers = set(), 0
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = fn.args.args + fn.args.kwonlyargs
        params = {a.arg for a in args if a.annotation is not None and ast.unparse(a.annotation) == "ShardReader"}
        readers += len(params)
        read.update(
            node.attr
            for node in ast.walk(fn)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in params
        )
    assert readers > 10  # the functions of the read path do take the view
    assert sorted(read - declared) == []
