"""Which graph a dense vector gets, made and loaded in one place.

hnswlib's over float32 vectors (``shard.hnsw``), or, when the vector has a
quantization, Shoal's own over int8 copies (``shard.scalar_graph``), usearch's over
binary ones (``shard.quantized``) or faiss's over product-quantized codes
(``shard.product``). All answer the same calls (add,
remove, search, labels, save). A graph's ``kind`` ("hnsw", "scalar", "binary",
"product") is written beside it in a snapshot, with its quantization and the scale of
a scalar one, so that a graph saved under another quantization (or another
compression, quantile...) is not loaded but rebuilt from the vectors; so is a graph
saved in another ``format`` than its class writes (a scalar graph from before
Shoal's own: usearch's).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from shard.hnsw import HnswIndex
from shard.quantized import QuantizedIndex, element_stats, needs_stats
from shard.types import ShardConfig

if TYPE_CHECKING:
    from shard.product import ProductIndex
    from shard.scalar_graph import ScalarIndex

Graph = Union[HnswIndex, "ScalarIndex", QuantizedIndex, "ProductIndex"]
# ``ProductIndex.kind`` and ``ScalarIndex.kind``. shard.product, and faiss with it (~15 MB,
# 0.1 s), load with the first product graph, and shard.scalar_graph, and numba with it
# (~60 MB), with the first scalar one: the gateway's processes import the shard's
# modules, never a graph.
PRODUCT, SCALAR = "product", "scalar"
SAMPLE = 10_000  # vectors a new graph is given: a scalar one's scale, a product one's codebooks (shard.product),
# a two-bit binary one's statistics


def kind_for(config: ShardConfig, name: str) -> str:
    """The kind of graph vector ``name`` gets under ``config``."""
    quantization = config.quantization_for(name)
    return quantization.kind if quantization is not None and quantization.applied else HnswIndex.kind


def matches(graph: Graph, config: ShardConfig, name: str) -> bool:
    """Whether ``graph`` is what ``config`` asks for vector ``name``."""
    if graph.kind != kind_for(config, name):
        return False
    return graph.kind == HnswIndex.kind or graph.quantization == config.quantization_for(name)


def new(config: ShardConfig, name: str, threads: int, capacity: int, sample: np.ndarray) -> Graph:
    """An empty graph for vector ``name``; ``sample``, some of its vectors, sets the
    scale of a scalar one, trains the codebooks of a product one and gives a binary
    one with two-bit codes its statistics."""
    params, quantization = config.vectors[name], config.quantization_for(name)
    kind = kind_for(config, name)
    if kind == HnswIndex.kind:
        return HnswIndex(params.size, params.distance, config.hnsw_for(name), threads=threads, capacity=capacity)
    if kind == PRODUCT:
        from shard.product import ProductIndex

        return ProductIndex(params.size, params.distance, config.hnsw_for(name), quantization, threads, sample)
    if kind == SCALAR:
        from shard.scalar_graph import ScalarIndex, choose_scale

        return ScalarIndex(params.size, params.distance, config.hnsw_for(name), quantization, threads,
                           choose_scale(sample, quantization.quantile), capacity)
    stats = element_stats(sample) if len(sample) and needs_stats(quantization) else None
    return QuantizedIndex(params.size, params.distance, config.hnsw_for(name), quantization, threads, stats)


def describe(graph: Graph) -> dict:
    """What a snapshot's meta.json says of a graph, for ``load``."""
    if graph.kind == HnswIndex.kind:
        return {"kind": graph.kind}
    about = {"kind": graph.kind, "quantization": graph.quantization.to_json(), "scale": graph.scale}
    if getattr(graph, "format", None):
        about["format"] = graph.format
    if getattr(graph, "stats", None) is not None:
        about["stats"] = graph.stats_json()
    return about


def load(path: Path, config: ShardConfig, name: str, about: dict | None, labels: np.ndarray,
         threads: int = 1) -> Graph | None:
    """The graph saved at ``path`` (``about``: its ``describe``; None in snapshots
    from before quantized graphs, which hold hnswlib's), or None when it was saved
    as another kind than ``config`` now asks for."""
    about = about or {"kind": HnswIndex.kind}
    params, quantization = config.vectors[name], config.quantization_for(name)
    if about["kind"] != kind_for(config, name):
        return None
    if about["kind"] == HnswIndex.kind:
        return HnswIndex.load(path, params.size, params.distance, config.hnsw_for(name), labels, threads)
    if about.get("quantization") != quantization.to_json():
        return None  # the same kind, other parameters (a quantile, a compression)
    if about["kind"] == PRODUCT:
        from shard.product import ProductIndex

        return ProductIndex.load(path, params.size, params.distance, config.hnsw_for(name), quantization, labels,
                                 threads)
    if about["kind"] == SCALAR:
        from shard.scalar_graph import ScalarIndex

        if about.get("format") != ScalarIndex.format:
            return None
        try:
            return ScalarIndex.load(path, params.size, params.distance, config.hnsw_for(name), quantization, labels,
                                    about.get("scale"), threads)
        except ValueError:
            return None  # not a whole graph: built again from the vectors
    try:
        return QuantizedIndex.load(path, params.size, params.distance, config.hnsw_for(name), quantization, labels,
                                   threads, about.get("stats"))
    except ValueError:
        return None  # bits of another encoding, or two-bit statistics missing: built again
