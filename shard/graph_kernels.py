"""The loops of Shoal's own HNSW graph over int8 vectors (``shard.scalar_graph``),
compiled by numba.

The graph is hnswlib's algorithm (Malkov & Yashunin, "Efficient and robust
approximate nearest neighbor search using Hierarchical Navigable Small World
graphs", 2016; the neighbour-selection heuristic and the search loop follow
hnswlib's ``hnswalg.h``), held in plain arrays:

- ``vecs`` (capacity, dim) int8: node ``x``'s vector;
- ``links0`` (capacity, m0) int32 and ``count0`` (capacity,): its neighbours on
  level 0;
- ``slot`` (capacity,): its row in ``links_up`` (slots, LEVELS, m) and ``count_up``
  (slots, LEVELS), which hold its neighbours on levels 1 and up; -1 for a node on
  level 0 only (most of them: all but 1/m);
- ``deleted`` (capacity,) uint8: removed nodes stay in the graph as waypoints (as
  hnswlib's ``mark_deleted``) and never come out of a search;
- ``state`` int64: the number of nodes, the entry point, its level, and the stamp
  of the ``visited`` array (uint16, one entry a node) that the walk marks.

Similarities are int64 and bigger is better: the integer dot product of two rows
(Cosine, Dot) or the negated squared L2 distance (Euclid, ``l2``).

What makes the walk fast at 100k x 384 is memory, not arithmetic: the int8 rows
are a quarter of float32's, and before scoring a node's neighbours the walk asks
the CPU to fetch every unvisited one's row (``_prefetch``, LLVM's
``llvm.prefetch``), so that their cache misses overlap instead of following one
another. Measured on the wordnet vectors (100k x 384, ef 64, one query per call):
the walk takes ~70-80 us where hnswlib's over float32 takes ~145 us, and this
one ~145 us too without the prefetching.

A search keeps the GIL, as ``shard.sparse_kernels``'s loops do (it runs for
microseconds); ``insert`` releases it (it runs for milliseconds, and the shard's
other threads go on meanwhile). Callers serialise inserts and searches with a lock:
they share ``visited`` and the heaps. Compiled on first use and cached on disk
(``cache=True``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LEVELS = 16  # levels above 0 a node may have: 16**16 nodes would be needed to fill them at m 16
COUNT, ENTRY, TOP, STAMP = 0, 1, 2, 3  # the fields of ``state``
LOWEST = np.iinfo(np.int64).min


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the CPU to fetch ``array[index]``'s cache line (1-D ``array``)."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8")
        # read, high temporal locality, data cache
        builder.call(function, [builder.bitcast(pointer, byte_pointer), ir.Constant(i32, 0), ir.Constant(i32, 3),
                                ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@njit(cache=True, inline="always")
def _similarity(a, b, l2):
    if l2:
        far = np.int64(0)
        for i in range(a.size):
            d = np.int32(a[i]) - np.int32(b[i])
            far += d * d
        return -far
    near = np.int32(0)  # |sum| <= 65,536 dims * 127 * 127 < 2**31
    for i in range(a.size):
        near += np.int32(a[i]) * np.int32(b[i])
    return np.int64(near)


@njit(cache=True, inline="always")
def _neighbours(node, level, links0, count0, slot, links_up, count_up):
    if level == 0:
        return links0[node, :count0[node]]
    row = slot[node]
    return links_up[row, level - 1, :count_up[row, level - 1]]


# Binary min-heaps on parallel arrays (scores, nodes): the ef results found so far
# keep the worst on top; the candidates still to expand are kept by negated score,
# so that the best is on top.

@njit(cache=True, inline="always")
def _push(scores, nodes, n, score, node):
    """Adds (score, node) to the heap of ``n``; returns its new size."""
    i = n
    while i > 0:
        parent = (i - 1) >> 1
        if scores[parent] <= score:
            break
        scores[i] = scores[parent]
        nodes[i] = nodes[parent]
        i = parent
    scores[i] = score
    nodes[i] = node
    return n + 1


@njit(cache=True, inline="always")
def _replace_top(scores, nodes, n, score, node):
    """Puts (score, node) in the place of the heap's top, and sifts it down."""
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and scores[child + 1] < scores[child]:
            child += 1
        if scores[child] >= score:
            break
        scores[i] = scores[child]
        nodes[i] = nodes[child]
        i = child
    scores[i] = score
    nodes[i] = node


@njit(cache=True, inline="always")
def _pop(scores, nodes, n):
    """Drops the heap's top; returns its new size."""
    n -= 1
    if n > 0:
        _replace_top(scores, nodes, n, scores[n], nodes[n])
    return n


@njit(cache=True, inline="always")
def _next_stamp(visited, state):
    stamp = state[STAMP] + 1
    if stamp >= 65535:
        visited[:] = 0
        stamp = 1
    state[STAMP] = stamp
    return np.uint16(stamp)


@njit(cache=True)
def _greedy(q, node, score, level, vecs, links0, count0, slot, links_up, count_up, l2):
    """The walk down the upper levels: move to the best neighbour while one is better."""
    moved = True
    while moved:
        moved = False
        for other in _neighbours(node, level, links0, count0, slot, links_up, count_up):
            s = _similarity(q, vecs[other], l2)
            if s > score:
                score, node, moved = s, other, True
    return node, score


@njit(cache=True)
def _search_level(q, entry, entry_score, level, ef, skip_deleted, vecs, links0, count0, slot, links_up, count_up,
                  deleted, visited, state, best_s, best_n, worst_s, worst_n, l2):
    """The beam search of one level from ``entry``: up to ``ef`` results, left in
    the heap ``worst_s``/``worst_n`` (worst on top); returns how many."""
    stamp = _next_stamp(visited, state)
    flat_vecs = vecs.reshape(-1)
    dim = vecs.shape[1]
    visited[entry] = stamp
    n_best = _push(best_s, best_n, 0, -entry_score, entry)
    n_worst = 0
    if not (skip_deleted and deleted[entry]):
        n_worst = _push(worst_s, worst_n, 0, entry_score, entry)
    while n_best > 0:
        score, node = -best_s[0], best_n[0]
        bound = worst_s[0] if n_worst > 0 else LOWEST
        if score < bound and (n_worst == ef or not skip_deleted):
            break
        n_best = _pop(best_s, best_n, n_best)
        around = _neighbours(node, level, links0, count0, slot, links_up, count_up)
        for other in around:
            if visited[other] != stamp:
                for byte in range(0, dim, 64):
                    _prefetch(flat_vecs, np.int64(other) * dim + byte)
        for other in around:
            if visited[other] == stamp:
                continue
            visited[other] = stamp
            s = _similarity(q, vecs[other], l2)
            if n_worst < ef or s > worst_s[0]:
                n_best = _push(best_s, best_n, n_best, -s, other)
                if not (skip_deleted and deleted[other]):
                    if n_worst < ef:
                        n_worst = _push(worst_s, worst_n, n_worst, s, other)
                    else:
                        _replace_top(worst_s, worst_n, n_worst, s, other)
    return n_worst


@njit(cache=True)
def _select(candidates, scores, m, vecs, l2, out):
    """hnswlib's heuristic: of ``candidates`` (best first), keep one only if it is
    closer to the new node than to every one kept before it; up to ``m``. Writes
    them to ``out``, returns how many."""
    kept = 0
    for i in range(candidates.size):
        if kept == m:
            break
        c, score = candidates[i], scores[i]
        good = True
        for j in range(kept):
            if _similarity(vecs[c], vecs[out[j]], l2) > score:
                good = False
                break
        if good:
            out[kept] = c
            kept += 1
    return kept


@njit(cache=True)
def _link_back(target, node, level, m_max, vecs, links0, count0, slot, links_up, count_up, l2, spare_n, spare_s):
    """Adds ``node`` to ``target``'s neighbours on ``level``; when they are full,
    the heuristic chooses ``m_max`` of them and ``node`` again."""
    if level == 0:
        links, n = links0[target], count0[target]
    else:
        links, n = links_up[slot[target], level - 1], count_up[slot[target], level - 1]
    for i in range(n):
        if links[i] == node:
            return
    if n < m_max:
        links[n] = node
        n += 1
    else:
        for i in range(n):
            spare_n[i] = links[i]
            spare_s[i] = _similarity(vecs[target], vecs[links[i]], l2)
        spare_n[n] = node
        spare_s[n] = _similarity(vecs[target], vecs[node], l2)
        order = np.argsort(-spare_s[:n + 1])
        n = _select(spare_n[:n + 1][order], spare_s[:n + 1][order], m_max, vecs, l2, links)
    if level == 0:
        count0[target] = n
    else:
        count_up[slot[target], level - 1] = n


@njit(cache=True, nogil=True)
def insert(nodes, node_levels, m, m0, ef_construct, vecs, links0, count0, slot, links_up, count_up, deleted, visited,
           state, best_s, best_n, worst_s, worst_n, l2):
    """Links ``nodes`` (rows of ``vecs`` already written; ``node_levels`` their
    levels, a ``slot`` given to each above 0) into the graph, one after another."""
    chosen = np.empty(max(m, m0) + 1, np.int32)
    spare_n = np.empty(m0 + 1, np.int32)
    spare_s = np.empty(m0 + 1, np.int64)
    for i in range(nodes.size):
        x, level = nodes[i], node_levels[i]
        state[COUNT] = max(state[COUNT], x + 1)
        if state[ENTRY] < 0 or (state[ENTRY] == x and state[COUNT] == 1):
            state[ENTRY], state[TOP] = x, level
            continue
        q = vecs[x]
        node = state[ENTRY]
        score = _similarity(q, vecs[node], l2)
        for above in range(state[TOP], level, -1):
            node, score = _greedy(q, node, score, above, vecs, links0, count0, slot, links_up, count_up, l2)
        for lv in range(min(level, state[TOP]), -1, -1):
            found = _search_level(q, node, score, lv, ef_construct, False, vecs, links0, count0, slot, links_up,
                                  count_up, deleted, visited, state, best_s, best_n, worst_s, worst_n, l2)
            order = np.argsort(-worst_s[:found])
            others = worst_n[:found][order] != x  # a node linked again may meet itself
            candidates, scores = worst_n[:found][order][others], worst_s[:found][order][others]
            kept = _select(candidates, scores, m, vecs, l2, chosen)
            if lv == 0:
                links0[x, :kept] = chosen[:kept]
                count0[x] = kept
            else:
                links_up[slot[x], lv - 1, :kept] = chosen[:kept]
                count_up[slot[x], lv - 1] = kept
            for j in range(kept):
                _link_back(chosen[j], x, lv, m0 if lv == 0 else m, vecs, links0, count0, slot, links_up, count_up, l2,
                           spare_n, spare_s)
            if candidates.size > 0:
                node, score = candidates[0], scores[0]
        if level > state[TOP]:
            state[ENTRY], state[TOP] = x, level


@njit(cache=True)
def search(queries, scale, k, ef, vecs, links0, count0, slot, links_up, count_up, deleted, visited, state, best_s,
           best_n, worst_s, worst_n, l2, label_of, out_labels, out_scores):
    """The ``k`` best labels of each float32 query (quantized here as
    ``ScalarIndex.encode`` quantizes: ``scale`` must be an ``np.float32``), not
    deleted, best first, with their similarities over ``scale**2``, into
    ``out_labels``/``out_scores`` (m, k), which the caller fills with -1 and -inf."""
    if state[ENTRY] < 0:
        return
    q = np.empty(queries.shape[1], np.int8)
    square = np.float64(scale) * np.float64(scale)
    for qi in range(queries.shape[0]):
        for i in range(q.size):
            q[i] = np.int8(min(max(np.rint(queries[qi, i] * scale), np.float32(-127)), np.float32(127)))
        node = state[ENTRY]
        score = _similarity(q, vecs[node], l2)
        for above in range(state[TOP], 0, -1):
            node, score = _greedy(q, node, score, above, vecs, links0, count0, slot, links_up, count_up, l2)
        found = _search_level(q, node, score, 0, max(ef, k), True, vecs, links0, count0, slot, links_up, count_up,
                              deleted, visited, state, best_s, best_n, worst_s, worst_n, l2)
        order = np.argsort(-worst_s[:found])[:k]
        for j in range(order.size):
            out_labels[qi, j] = label_of[worst_n[order[j]]]
            out_scores[qi, j] = np.float32(worst_s[order[j]] / square)
