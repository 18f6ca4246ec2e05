"""Quantization through qdrant-client 1.15.1 (scalar, binary, product): set at create
(for the collection or one vector) or by PATCH, reported as Qdrant reports it, and applied: once the graph is
built, a search without rescoring answers with the quantized scores (near the exact
ones, not equal); with ``rescore`` (and ``oversampling``) every point found has the
exact score ``QdrantClient(":memory:")`` gives it, and nearly all of its top 10 are
found (an HNSW graph is approximate, quantized or not).

:memory: has no quantization at all (it ignores the config): it is the exact answer.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from qdrant_client import models

from .data import create_both, make_points, query_vectors, upsert_both

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

DIM, N = 24, 1500
SCALAR = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8,
                                                                           quantile=0.99, always_ram=True))
BINARY = models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
PRODUCT = models.ProductQuantization(product=models.ProductQuantizationConfig(
    compression=models.CompressionRatio.X16, always_ram=True))
# The graph is built at once (10 KB of vectors), as Qdrant's optimizer does past its threshold.
SMALL_THRESHOLD = models.OptimizersConfigDiff(indexing_threshold=10)


def indexed(client, name: str, timeout: float = 60.0) -> None:
    """Wait until every vector is in its graph (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get_collection(name)
        if info.indexed_vectors_count and info.indexed_vectors_count >= info.points_count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name}: not indexed within {timeout:g} s")


def rescored(oversampling: float) -> models.SearchParams:
    return models.SearchParams(hnsw_ef=256, quantization=models.QuantizationSearchParams(
        rescore=True, oversampling=oversampling))


def check(shoal, memory, name: str, using: str | None, oversampling: float, approximate: bool,
          rescore: bool | None = True, near: float = 0.1) -> None:
    """Rescored: the points found have their exact scores (the :memory: ones), best
    first, and are nearly all of Qdrant's top 10 (the graph is approximate: a point
    it misses is missed with or without quantization). Not rescored
    (``approximate``): scores within ``near`` of the exact ones, not equal."""
    found, differ = 0, 0
    params = models.SearchParams(hnsw_ef=256, quantization=models.QuantizationSearchParams(
        rescore=rescore, oversampling=oversampling))
    for q in query_vectors(5, DIM):
        exact = {p.id: p.score for p in memory.query_points(name, query=q, using=using, limit=N).points}
        best = [p.id for p in memory.query_points(name, query=q, using=using, limit=10).points]
        hits = shoal.query_points(name, query=q, using=using, limit=10, search_params=params).points
        assert len(hits) == 10 and [p.score for p in hits] == sorted((p.score for p in hits), reverse=True)
        assert np.allclose([p.score for p in hits], [exact[p.id] for p in hits], atol=1e-5)
        found += len({p.id for p in hits} & set(best))
        plain = shoal.query_points(name, query=q, using=using, limit=10,
                                   search_params=models.SearchParams(hnsw_ef=256)).points
        assert np.allclose([p.score for p in plain], [exact[p.id] for p in plain], atol=near)
        differ += any(abs(p.score - exact[p.id]) > 1e-6 for p in plain)
    assert found >= 0.9 * 50, found
    assert bool(differ) is approximate, differ


def test_scalar_then_binary_then_none_by_patch(shoal, memory, collection_names, shard_number, shoal_server):
    if shoal_server is None:
        pytest.skip("the :memory: twin does not quantize")
    name = collection_names("quantized")
    create_both(shoal, memory, name, models.VectorParams(size=DIM, distance=models.Distance.COSINE), shard_number,
                quantization_config=SCALAR, optimizers_config=SMALL_THRESHOLD)
    upsert_both(shoal, memory, name, make_points(N, DIM))
    indexed(shoal, name)
    config = shoal.get_collection(name).config
    assert config.quantization_config == SCALAR
    check(shoal, memory, name, None, 4.0, approximate=True)  # scalar: no rescoring by default, as Qdrant

    assert shoal.update_collection(name, quantization_config=BINARY) is True
    assert shoal.get_collection(name).config.quantization_config == BINARY
    indexed(shoal, name)
    # Binary: rescored by default (``rescore`` unset). One bit of each of 24 random
    # dimensions ranks poorly: the oversampling asks for most points, so that the
    # rescoring is what is checked.
    check(shoal, memory, name, None, 100.0, approximate=False, rescore=None)

    assert shoal.update_collection(name, quantization_config=models.Disabled.DISABLED) is True
    assert shoal.get_collection(name).config.quantization_config is None
    indexed(shoal, name)
    check(shoal, memory, name, None, 1.0, approximate=False)  # float32 again: exact scores
    assert shoal.delete_collection(name) is True


def test_binary_encodings_at_create_and_by_patch(shoal, memory, collection_names, shard_number, shoal_server):
    """Two bits a dimension with an 8-bit query, then one and a half with a 4-bit one:
    reported as given, and rescored (binary's default) to the exact scores."""
    if shoal_server is None:
        pytest.skip("the :memory: twin does not quantize")
    two_bits = models.BinaryQuantization(binary=models.BinaryQuantizationConfig(
        encoding=models.BinaryQuantizationEncoding.TWO_BITS,
        query_encoding=models.BinaryQuantizationQueryEncoding.SCALAR8BITS))
    one_and_half = models.BinaryQuantization(binary=models.BinaryQuantizationConfig(
        always_ram=True, encoding=models.BinaryQuantizationEncoding.ONE_AND_HALF_BITS,
        query_encoding=models.BinaryQuantizationQueryEncoding.SCALAR4BITS))
    name = collection_names("quantized_encodings")
    create_both(shoal, memory, name, models.VectorParams(size=DIM, distance=models.Distance.COSINE), shard_number,
                quantization_config=two_bits, optimizers_config=SMALL_THRESHOLD)
    upsert_both(shoal, memory, name, make_points(N, DIM))
    indexed(shoal, name)
    assert shoal.get_collection(name).config.quantization_config == two_bits
    check(shoal, memory, name, None, 100.0, approximate=False, rescore=None)
    assert shoal.update_collection(name, quantization_config=one_and_half) is True
    assert shoal.get_collection(name).config.quantization_config == one_and_half
    indexed(shoal, name)
    check(shoal, memory, name, None, 100.0, approximate=False, rescore=None)
    assert shoal.delete_collection(name) is True


def test_product_by_patch(shoal, memory, collection_names, shard_number, shoal_server):
    """x16 of 24 dimensions: 6 one-byte codes a vector (faiss's graph over them), of
    random dimensions: the quantized cosines are further off than scalar's."""
    if shoal_server is None:
        pytest.skip("the :memory: twin does not quantize")
    name = collection_names("quantized_product")
    create_both(shoal, memory, name, models.VectorParams(size=DIM, distance=models.Distance.COSINE), shard_number,
                optimizers_config=SMALL_THRESHOLD)
    upsert_both(shoal, memory, name, make_points(N, DIM))
    indexed(shoal, name)
    assert shoal.update_collection(name, quantization_config=PRODUCT) is True
    assert shoal.get_collection(name).config.quantization_config == PRODUCT
    indexed(shoal, name)
    check(shoal, memory, name, None, 8.0, approximate=True, near=0.2)  # no rescoring by default, as Qdrant
    assert shoal.delete_collection(name) is True


def test_a_vectors_own_quantization(shoal, memory, collection_names, shard_number, shoal_server):
    if shoal_server is None:
        pytest.skip("the :memory: twin does not quantize")
    name = collection_names("quantized_named")
    create_both(shoal, memory, name, {
        "q": models.VectorParams(size=DIM, distance=models.Distance.DOT, quantization_config=SCALAR),
        "f": models.VectorParams(size=DIM, distance=models.Distance.DOT),
    }, shard_number, optimizers_config=SMALL_THRESHOLD)
    upsert_both(shoal, memory, name, make_points(N, DIM, named={"q": DIM, "f": DIM}))
    indexed(shoal, name)
    vectors = shoal.get_collection(name).config.params.vectors
    assert vectors["q"].quantization_config == SCALAR and vectors["f"].quantization_config is None
    check(shoal, memory, name, "q", 4.0, approximate=True)
    check(shoal, memory, name, "f", 1.0, approximate=False)

    # PATCH of the vector's own: disabled, then binary for the other one.
    assert shoal.update_collection(name, vectors_config={
        "q": models.VectorParamsDiff(quantization_config=models.Disabled.DISABLED),
        "f": models.VectorParamsDiff(quantization_config=SCALAR)}) is True
    vectors = shoal.get_collection(name).config.params.vectors
    assert vectors["q"].quantization_config is None and vectors["f"].quantization_config == SCALAR
    indexed(shoal, name)
    check(shoal, memory, name, "q", 1.0, approximate=False)
    check(shoal, memory, name, "f", 4.0, approximate=True)
    assert shoal.delete_collection(name) is True
