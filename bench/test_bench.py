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


def test_load_generation_is_loopback_only():
    loadgen.check_loopback("http://127.0.0.1:6333/collections/c/points/search")
    with pytest.raises(ValueError):
        loadgen.check_loopback("http://example.com/collections/c/points/search")
