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


def test_only_one_module_imports_hnswlib():
    users = [f for f in (ROOT / "shard").rglob("*.py") if "hnswlib" in imported_roots(f)]
    assert [f.name for f in users] == ["hnsw.py"]


def test_ray_calls_live_in_runtime():
    users = sorted(f.name for f in (ROOT / "cluster").rglob("*.py") if "ray" in imported_roots(f))
    assert users == ["runtime.py"]
