"""Checks of the benchmark's own arithmetic: `pytest bench/test_bench.py` (a few seconds).

Not under tests/ because the benchmark is not part of Shoal's package; these guard the
figures the benchmark prints (ground truth, recall, targets, memory accounting).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bench import dataset, loadgen, procmem, report
from bench.config import BenchConfig


def test_exact_top_k_matches_a_full_sort():
    rng = np.random.default_rng(1)
    base = dataset.normalise(rng.standard_normal((500, 16)).astype(np.float32))
    queries = dataset.normalise(rng.standard_normal((37, 16)).astype(np.float32))
    got = dataset.exact_top_k(base, queries, 10, chunk=8)
    want = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(got, want)


def test_filtered_ground_truth_only_returns_points_with_that_value():
    rng = np.random.default_rng(2)
    ds = dataset.Dataset(
        base=rng.standard_normal((300, 8)).astype(np.float32),
        pos=["adv" if i % 10 == 0 else "noun" for i in range(300)],
        queries=rng.standard_normal((5, 8)).astype(np.float32),
    )
    gt = dataset.ground_truth(ds, 10, ("adv",))
    assert all(ds.pos[i] == "adv" for i in gt["adv"].ravel())
    assert gt[""].shape == (5, 10)


def test_recall_counts_overlap_per_query():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert dataset.recall_at_k([[1, 2, 9, 9], [8, 7, 6, 5]], truth, 4) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        dataset.recall_at_k([[1]], truth, 4)


def _results(shoal_qps: float, shoal_recall: float) -> dict:
    edge = {
        "ingest": {"points_per_s": 1000.0},
        "search": {"best_qps": 1000.0, "best": "batch", "recall": 0.90, "batch_recall": 0.99},
        "filtered": {"adv": {"best_qps": 400.0, "recall": 1.0, "selectivity": 0.03}},
    }
    shoal = {
        "ingest": {"points_per_s": 1200.0},
        "search": {"recall": shoal_recall, "concurrency": {"32": {"qps": shoal_qps}}, "latency": {"p50_ms": 1.5}},
        "filtered": {"adv": {"qps": 250.0, "recall": 0.96}},
    }
    return {"edge": edge, "shoal": shoal}


def test_targets_use_edge_best_mode_recall_and_ratios():
    cfg = BenchConfig(dataset="x", filters=("adv",), concurrencies=(32,))
    by_name = lambda res: {t["target"].split(":")[0].split(" >=")[0]: t["result"] for t in report.targets(res, cfg)}
    ok = by_name(_results(shoal_qps=850.0, shoal_recall=0.985))
    assert set(ok.values()) == {"PASS"}
    # Edge's best mode is the batch call, so its recall to match is 0.99, not 0.90.
    low_recall = report.targets(_results(shoal_qps=850.0, shoal_recall=0.975), cfg)
    assert low_recall[0]["result"] == "FAIL"
    slow = report.targets(_results(shoal_qps=790.0, shoal_recall=0.99), cfg)
    assert slow[0]["result"] == "FAIL"


def test_missing_side_gives_na_and_dashes():
    cfg = BenchConfig(dataset="x", filters=("adv",))
    res = {"edge": _results(1.0, 1.0)["edge"]}
    assert {t["result"] for t in report.targets(res, cfg)} == {"n/a"}
    text = report.render(report.build_rows(res, cfg), report.targets(res, cfg))
    assert "—" in text and "n/a" in text


def test_process_tree_includes_children_and_sums_memory():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tree = procmem.process_tree(os.getpid())
        assert os.getpid() in tree and child.pid in tree
        mem = procmem.tree_memory(os.getpid())
        assert mem["rss_mib"] > procmem.self_memory()["rss_mib"] > 0
    finally:
        child.kill()
        child.wait()


def test_autogroup_is_set_for_the_run_and_restored():
    from bench import machine

    if not os.access(machine.AUTOGROUP, os.W_OK):
        pytest.skip("no session autogrouping to set here (or not root)")

    def state() -> bool:
        return machine.AUTOGROUP.read_text().strip() == "1"

    before = state()
    with machine.autogroup(not before) as grouped:
        assert grouped is (not before) and state() is (not before)
    assert state() is before


def test_load_generation_is_loopback_only():
    loadgen.check_loopback("http://127.0.0.1:6333/collections/c/points/search")
    with pytest.raises(ValueError):
        loadgen.check_loopback("http://example.com/collections/c/points/search")


# -- hybrid search (bench/hybrid_data.py) ------------------------------------------------

from bench import hybrid_data  # noqa: E402


def test_tokens_are_lowercased_ascii_alphanumeric_runs():
    assert hybrid_data.tokens('Rorippa amphibia, "rural" 3D-film; café') == ["rorippa", "amphibia", "rural", "3d", "film", "caf"]


def test_count_vectors_are_sorted_unique_indices_with_counts():
    vocab = hybrid_data.vocabulary([["b", "a"], ["c", "a"]])
    assert vocab == {"a": 0, "b": 1, "c": 2}
    rows = hybrid_data.count_vectors([["c", "a", "c"], []], vocab)
    indices, values = rows.row(0)
    assert indices.tolist() == [0, 2] and values.tolist() == [1.0, 2.0]
    assert len(rows) == 2 and rows.row(1)[0].size == 0


def test_idf_is_qdrants_fancy_idf():
    # ln((N - n + 0.5) / (n + 0.5) + 1) for N = 10: n = 1 -> ln(7.333...), n = 10 -> ln(1.0476...)
    assert hybrid_data.idf(10, [1, 10]) == pytest.approx([np.log(9.5 / 1.5 + 1), np.log(0.5 / 10.5 + 1)])


def test_top_k_breaks_ties_by_column_even_at_the_cut():
    scores = np.array([[1.0, 3.0, 2.0, 2.0, 2.0, -np.inf], [-np.inf, 5.0, -np.inf, -np.inf, -np.inf, -np.inf]])
    ids, best = hybrid_data.top_k(scores, 3)
    assert ids.tolist() == [[1, 2, 3], [1, -1, -1]]
    assert best[1, 0] == 5.0 and best[1, 1] == -np.inf


def test_rank_bounds_spread_a_tie_over_its_ranks_and_past_the_limit():
    scores = np.array([9.0, 5.0, 5.0, 5.0, 1.0, -np.inf])
    assert hybrid_data.rank_bounds(scores, 2) == {0: (0, 0), 1: (1, 2), 2: (1, 2), 3: (1, 2)}
    assert hybrid_data.rank_bounds(scores, 5) == {0: (0, 0), 1: (1, 3), 2: (1, 3), 3: (1, 3), 4: (4, 4)}


def test_rrf_sums_reciprocal_ranks_and_keeps_first_appearance_on_ties():
    fused = hybrid_data.rrf([[7, 8, 9], [9, 6]])
    assert fused == pytest.approx({9: 1 / 4 + 1 / 2, 7: 1 / 2, 8: 1 / 3, 6: 1 / 3})
    assert list(fused) == [9, 7, 8, 6]


def test_fused_bounds_line_is_the_kth_worst_case_score():
    # dense: 1, 2; sparse: 3 alone first, then 1 and 4 tied for ranks 1-2 with limit 2
    best, line, size = hybrid_data.fused_bounds([1, 2], {3: (0, 0), 1: (1, 2), 4: (1, 2)}, limit=2, k=2)
    assert best == pytest.approx({1: 1 / 2 + 1 / 3, 2: 1 / 3, 3: 1 / 2, 4: 1 / 3})
    # worst cases: 1 -> 1/2 (pushed out of the sparse list), 3 -> 1/2, 2 -> 1/3, 4 -> 0
    assert line == pytest.approx(1 / 2) and size == 2


def test_overlaps_plain_and_tie_aware():
    assert hybrid_data.overlap([[1, 2, 3]], [[1, 2, 4]], 3) == pytest.approx(2 / 3)
    assert hybrid_data.overlap([[1, 2]], [[1, 2], [3, 4]], 2) == 1.0  # only answered queries count
    # 5 is not the reference's 3rd but ties with it; 6 is below the line; a repeat counts once
    assert hybrid_data.tie_aware_overlap([[1, 5, 6]], [[9.0, 4.0, 3.0]], [4.0], [3], 3) == pytest.approx(2 / 3)
    assert hybrid_data.tie_aware_overlap([[1, 1, 5]], [[9.0, 9.0, 4.0]], [4.0], [3], 3) == pytest.approx(2 / 3)


def _tiny_hybrid() -> hybrid_data.HybridData:
    rng = np.random.default_rng(3)
    words = ["w%d" % i for i in range(12)]
    docs = [list(rng.choice(words, size=rng.integers(1, 6))) for _ in range(60)]
    queries = [list(rng.choice(words, size=3)) for _ in range(7)]
    vocab = hybrid_data.vocabulary(docs + queries)
    dense = dataset.Dataset(base=rng.standard_normal((60, 8)).astype(np.float32), pos=["noun"] * 60,
                            queries=rng.standard_normal((7, 8)).astype(np.float32))
    return hybrid_data.HybridData(dense, hybrid_data.count_vectors(docs, vocab),
                                  hybrid_data.count_vectors(queries, vocab), len(vocab))


def test_exact_references_match_a_brute_force_with_qdrants_formulas():
    data = _tiny_hybrid()
    exact = hybrid_data.Exact(data, k=3, limit=5)
    docs = data.docs.matrix(data.dim).toarray()
    df = (docs > 0).sum(axis=0)
    weights = np.log((60 - df + 0.5) / (df + 0.5) + 1)
    for q in range(7):
        scores = docs @ (data.queries.matrix(data.dim).toarray()[q] * weights)
        cand = [i for i in np.argsort(-scores, kind="stable") if scores[i] > 0][:5]
        assert exact.sparse_ids[q][exact.sparse_ids[q] >= 0].tolist() == cand
        assert exact.sparse_score(q, cand) == pytest.approx(scores[cand])
        dense = np.argsort(-(dataset.normalise(data.dense.base) @ dataset.normalise(data.dense.queries)[q]))[:5]
        assert exact.dense_ids[q].tolist() == dense.tolist()
        assert exact.fused[q] == pytest.approx(hybrid_data.rrf([dense, cand]))
    # the exact answers pass their own checks
    answers = [(exact.sparse_ids[q][:3][exact.sparse_ids[q][:3] >= 0].tolist(), []) for q in range(7)]
    answers = [(ids, exact.sparse_score(q, ids).tolist()) for q, (ids, _) in enumerate(answers)]
    sparse = hybrid_data.check_sparse(exact, answers)
    assert sparse["overlap"] == sparse["tie_aware_overlap"] == 1.0 and sparse["max_score_rel_error"] == 0.0
    hybrid = hybrid_data.check_hybrid(exact, [(list(f)[:3], []) for f in exact.fused])
    assert hybrid["overlap"] == hybrid["tie_aware_overlap"] == 1.0


def test_hybrid_table_reports_a_refused_query_kind_and_a_missing_side():
    from bench import hybrid

    edge_kind = {"best_qps": 100.0, "best": "batch", "loop": {"qps": 50.0}, "batch": {"qps": 100.0},
                 "latency": {"p50_ms": 0.1}, "answers": []}
    results = {"edge": {"sparse": edge_kind, "hybrid": edge_kind},
               "shoal": {"errors": {"hybrid": "HTTP 400: prefetch is not supported"},
                         "sparse": {"load": {"qps": 80.0, "p50_ms": 2.0, "errors": 0},
                                    "python_client_latency": {"p50_ms": 1.0}, "answers": []}}}
    checked = {"sparse": {"shoal": {"overlap": 1.0, "tie_aware_overlap": 1.0, "queries": 0}}}
    table = hybrid.rows(results, checked)
    assert table[0]["shoal_over_edge"] == pytest.approx(0.8) and table[1]["shoal_qps"] is None
    text = hybrid.render(table, results, clients=32, limit=20)
    assert "hybrid: NOT MEASURED, Shoal answered HTTP 400" in text and "dense 20 + sparse 20" in text
    assert "—" in text


def test_sparse_score_gap_flags_a_point_sharing_no_index():
    gap = hybrid_data.relative_gap([2.0, 1.0, 5.0], np.array([2.0, 2.0, -np.inf]))
    assert gap.tolist() == [0.0, 0.5, np.inf]
