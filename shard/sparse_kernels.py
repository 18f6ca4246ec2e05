"""The inner loops of the sparse search, compiled by numba.

Each loop walks one posting part (or one list of candidates) of a query: a few
hundred to fifty thousand entries, where numpy would spend more in its calls
and temporary arrays than in the arithmetic. ``pruned_top`` runs a whole pruned
search (``shard.sparse._pruned_top``) in one call, over the table of the query's
posting parts and the arena that holds their entries: one call instead of one
per part, and no Python between them. Kept apart from ``shard.sparse``, which
keeps the postings and decides when to prune; every function here is a plain
loop over arrays.

Scores are summed as the full scan of ``SparseStore.search`` sums them: each
gain is the f32 product of an f32 weight and the f32 query weight, added in
f64, so that both ways give bit-identical scores. The query weight must be
passed as ``np.float32``.

Compiled on first use and cached on disk (numba's ``cache=True``), so a
process pays the compilation once per installation, not per start. The loops
keep the GIL (``nogil=False``): each runs for microseconds, and releasing and
taking back the GIL around every call let the shard's other threads cut in,
which measured twice the latency of a sparse search through the server.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=False, inline="always")
def _below(upper, threshold):
    """A score of at most ``upper`` surely stays under ``threshold``, with a margin
    for f32 rounding (a vector that only ties could still win by its offset)."""
    return upper + 1e-5 * (abs(upper) + abs(threshold)) + 1e-30 < threshold


@njit(cache=True, nogil=False, inline="always")
def _blocked(o: int, allowed: np.ndarray, use_allowed: bool) -> bool:
    return use_allowed and (o >= allowed.size or not allowed[o])


@njit(cache=True, nogil=False)
def collect(offsets, allowed, use_allowed, stamp, epoch, out, n):
    """Appends to ``out[n:]`` each allowed offset of ``offsets`` not yet stamped
    with ``epoch`` (and stamps it); returns the new count."""
    for k in range(offsets.size):
        o = offsets[k]
        if _blocked(o, allowed, use_allowed) or stamp[o] == epoch:
            continue
        stamp[o] = epoch
        out[n] = o
        n += 1
    return n


@njit(cache=True, nogil=False)
def accumulate(offsets, weights, w, allowed, use_allowed, stamp, epoch, acc, out, n):
    """Adds each allowed entry's gain to ``acc`` by offset (an offset first seen in
    this ``epoch`` starts from 0 and is appended to ``out[n:]``); returns the new count."""
    for k in range(offsets.size):
        o = offsets[k]
        if _blocked(o, allowed, use_allowed):
            continue
        gain = np.float64(weights[k] * w)
        if stamp[o] == epoch:
            acc[o] += gain
        else:
            stamp[o] = epoch
            acc[o] = gain
            out[n] = o
            n += 1
    return n


@njit(cache=True, nogil=False)
def add_to_found(offsets, weights, w, stamp, epoch, acc):
    """Adds each entry's gain to ``acc`` where its offset was found in this
    ``epoch`` (by ``accumulate``); the others are no candidates."""
    for k in range(offsets.size):
        o = offsets[k]
        if stamp[o] == epoch:
            acc[o] += np.float64(weights[k] * w)


@njit(cache=True, nogil=False, inline="always")
def _row_score(c, start, length, indices, values, q_idx, q_val):
    """The query's score of the row at offset ``c`` (a merge of two sorted index
    lists) and whether they share an index at all."""
    total, shared = 0.0, False
    if c < 0 or c >= start.size or length[c] < 0:
        return total, shared
    k, end, j = start[c], start[c] + length[c], 0
    while k < end and j < q_idx.size:
        if indices[k] < q_idx[j]:
            k += 1
        elif indices[k] > q_idx[j]:
            j += 1
        else:
            total += np.float64(values[k] * q_val[j])
            shared = True
            k += 1
            j += 1
    return total, shared


@njit(cache=True, nogil=False)
def score_rows(candidates, start, length, indices, values, q_idx, q_val, out):
    """``out[i]``: the f32 score of the row at ``candidates[i]``, -inf where there
    is no row or it shares no index with the query (``q_idx`` sorted)."""
    for i in range(candidates.size):
        total, shared = _row_score(candidates[i], start, length, indices, values, q_idx, q_val)
        out[i] = np.float32(total) if shared else -np.inf


ROUND = 128  # best_of scores the vectors this many at a time


@njit(cache=True, nogil=False)
def best_of(found, acc, unread, threshold, limit, start, length, indices, values, q_idx, q_val):
    """The vectors ``found`` (their partial scores in ``acc``) that can still make
    the top, scored exactly: ``(offsets, f32 scores)``.

    A vector's upper bound is its partial score plus ``unread`` (the bounds of
    the parts not read). The vectors are scored from their rows by falling
    bound, ``ROUND`` at a time (the highest bounds picked by a partition, not a
    sort of all), and the threshold rises to the ``limit``-th best exact score
    met so far; a vector whose bound can no longer reach it is dropped unscored."""
    upper = np.empty(found.size)
    hopeful = np.empty(found.size, dtype=np.int64)
    m = 0
    for i in range(found.size):
        bound = acc[found[i]] + unread
        if not _below(bound, threshold):
            upper[m], hopeful[m] = bound, found[i]
            m += 1
    best = np.full(limit, -np.inf)  # the best exact scores so far, ascending
    filled, scored = 0, 0
    offsets = np.empty(m, dtype=np.int64)
    scores = np.empty(m, dtype=np.float32)
    while m > 0:
        cut = np.partition(upper[:m], m - ROUND)[m - ROUND] if m > ROUND else -np.inf
        taken = np.flatnonzero(upper[:m] >= cut)
        for i in taken[np.argsort(-upper[taken])]:
            if _below(upper[i], threshold):
                return offsets[:scored], scores[:scored]  # the rest, here and left, are lower still
            total, _ = _row_score(hopeful[i], start, length, indices, values, q_idx, q_val)
            score = np.float32(total)
            offsets[scored], scores[scored] = hopeful[i], score
            scored += 1
            if filled < limit or score > best[0]:
                at = filled if filled < limit else 0  # the slot taken (the lowest once full)
                if filled < limit:
                    filled += 1
                while at > 0 and best[at - 1] > score:  # shift to keep best ascending
                    best[at] = best[at - 1]
                    at -= 1
                while at + 1 < filled and best[at + 1] < score:
                    best[at] = best[at + 1]
                    at += 1
                best[at] = score
            if filled == limit and best[0] > threshold:
                threshold = best[0]
        left = 0  # the vectors not taken that can still reach the risen threshold
        for i in range(m):
            if upper[i] < cut and not _below(upper[i], threshold):
                upper[left], hopeful[left] = upper[i], hopeful[i]
                left += 1
        m = left
    return offsets[:scored], scores[:scored]


# The columns of a query's parts table (``shard.sparse``: one row per part of the
# query's postings): where the part's entries begin in the arena, how many there
# are, and their lowest and highest weight.
START, LENGTH, LOW, HIGH = 0, 1, 2, 3


@njit(cache=True, nogil=False, inline="always")
def _threshold(scores, limit, score_threshold, has_threshold):
    """The least score a vector must beat to enter the top: the ``limit``-th best
    of ``scores`` (exact scores of some vectors), or ``score_threshold`` if
    higher; -inf when neither says anything."""
    if has_threshold:
        scores = scores[scores > np.float32(score_threshold)]
    threshold = -np.inf
    if scores.size >= limit:
        threshold = np.float64(np.partition(scores, scores.size - limit)[scores.size - limit])
    return max(threshold, score_threshold) if has_threshold else threshold


@njit(cache=True, nogil=False)
def pruned_top(parts, part_w, arena_offsets, arena_weights, allowed, use_allowed, stamp, epochs, acc, out,
               start, length, indices, values, q_idx, q_val, limit, score_threshold, has_threshold,
               max_share, short_part):
    """The pruned search of ``shard.sparse._pruned_top``, in one call:
    ``(True, offsets, f32 scores)`` of the vectors that can make the top, or
    ``(False, ...)`` where pruning does not pay. ``parts``: the table of the
    query's posting parts (columns ``START``..``HIGH``), ``part_w`` their query
    weights (f32); ``epochs``: two unused stamps (``shard.sparse._Scratch``)."""
    nothing = (False, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
    p = parts.shape[0]
    bounds = np.empty(p)  # the most each part can add to a score
    for k in range(p):
        w = np.float64(part_w[k])
        bounds[k] = max(w * parts[k, LOW], w * parts[k, HIGH], 0.0)
    order = np.argsort(-bounds, kind="mergesort")  # by falling bound, stable
    bounds = bounds[order]
    first = np.empty(p, dtype=np.int64)
    size = np.empty(p, dtype=np.int64)
    for j in range(p):
        first[j], size[j] = np.int64(parts[order[j], START]), np.int64(parts[order[j], LENGTH])

    # The first parts give a few vectors; their limit-th best exact score is a threshold.
    found, taken = 0, 0
    while taken < p and found < limit:
        span = slice(first[taken], first[taken] + size[taken])
        found = collect(arena_offsets[span], allowed, use_allowed, stamp, epochs[0], out, found)
        taken += 1
    if found < limit:
        return nothing
    scores = np.empty(found, dtype=np.float32)
    score_rows(out[:found], start, length, indices, values, q_idx, q_val, scores)
    threshold = _threshold(scores, limit, score_threshold, has_threshold)
    if threshold == -np.inf:
        return nothing

    # Essential: the parts whose bounds sum to more than the threshold leaves.
    rest = np.zeros(p + 1)  # rest[j]: the bound of the parts from j on
    for j in range(p - 1, -1, -1):
        rest[j] = rest[j + 1] + bounds[j]
    essential = -1
    for j in range(p + 1):
        if _below(rest[j], threshold):
            essential = j
            break
    if essential < 0:
        return nothing
    essential = max(taken, essential)
    if size[:essential].sum() > max_share * size.sum():
        return nothing

    # Only a vector in an essential part can make the top: the others score at most
    # what the threshold leaves. The essential parts are read, then the short
    # others for the vectors found (each part read lowers their bounds: reading
    # an entry costs far less than scoring a vector exactly); the hopeful ones
    # are then scored exactly.
    found = 0
    for j in range(essential):
        span = slice(first[j], first[j] + size[j])
        found = accumulate(arena_offsets[span], arena_weights[span], part_w[order[j]], allowed, use_allowed,
                           stamp, epochs[1], acc, out, found)
    unread = 0.0
    for j in range(essential, p):
        if size[j] <= short_part:
            span = slice(first[j], first[j] + size[j])
            add_to_found(arena_offsets[span], arena_weights[span], part_w[order[j]], stamp, epochs[1], acc)
        else:
            unread += bounds[j]
    offsets, scores = best_of(out[:found], acc, unread, threshold, limit, start, length, indices, values, q_idx, q_val)
    return True, offsets, scores
