"""The read view of a shard: what ``shard.search`` reads, declared apart from the
shard that provides it.

``LocalShard`` imports the read path to serve its reads; if the read path named
``LocalShard`` back (as it once did, under TYPE_CHECKING) the shard's layers
would form a circle, and every attribute of the shard would be within the read
path's reach. ``ShardReader`` lists the few it may use instead, as
``filters.FilterContext`` does for filters, which it extends. ``LocalShard``
hands itself: a Protocol costs nothing per query (no view object is built, no
array copied) and cannot go stale when a restore swaps the shard's stores.
``tests/test_layers.py`` checks that ``search.py`` reads nothing else off it.

The snapshot path has its own, narrower view: ``shard.snapshot.ShardState``,
the stores as of one sequence number.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from shard.filters import FilterContext
from shard.graphs import Graph
from shard.multi import MultiStore
from shard.points import PointTable
from shard.sparse import SparseStore
from shard.types import ShardConfig
from shard.vectors import VectorStore


class ShardReader(FilterContext, Protocol):
    """A shard as its reads see it; the caller holds the shard's lock throughout.

    Besides ``FilterContext`` (``size``, ``live``, ``payloads``, ``offsets_of``,
    ``has_vector``): the stores by vector name, which offsets each graph holds
    current, the hnswlib threads a batch of searches may use, and a cache for
    derived read state that the shard empties whenever it changes."""

    config: ShardConfig
    points: PointTable
    vectors: dict[str, VectorStore]
    sparse: dict[str, SparseStore]  # the sparse vectors by name, each with its inverted index
    multi: dict[str, MultiStore]  # the multivectors by name (no graphs)
    graphs: dict[str, Graph | None]
    indexed: dict[str, np.ndarray]  # indexed[name][offset]: the graph holds the offset's current vector
    search_threads: int

    def read_cache(self) -> dict: ...
