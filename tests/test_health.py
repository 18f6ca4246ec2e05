"""The health judge (cluster.health.HealthJudge) as a pure object: readings in,
effects out, no Ray, no clock. And the two answers it leads to (gateway.errors)."""

import logging

import pytest

from cluster.health import (
    ANSWERED,
    DEAD,
    SILENT,
    STARTING,
    Exit,
    HealthJudge,
    Log,
    RayChecked,
    RestartShard,
    ShardChecked,
    ShardKey,
    ShardsRunning,
)
from cluster.shard_client import ShardTimeout, ShardUnavailable
from gateway import errors

A0, A1, B0 = ShardKey("a", 0), ShardKey("a", 1), ShardKey("b", 0)


def judge(**kw) -> HealthJudge:
    j = HealthJudge(ray_grace=kw.get("ray_grace", 10.0), restart_after=kw.get("restart_after", 30.0))
    j.handle(ShardsRunning(frozenset({A0, A1, B0})))
    return j


def kinds(effects) -> list:
    return [type(e).__name__ if not isinstance(e, Log) else logging.getLevelName(e.level) for e in effects]


def test_all_well_says_nothing():
    j = judge()
    assert j.handle(RayChecked(0.0, None), *(ShardChecked(0.0, k, ANSWERED) for k in (A0, A1, B0))) == []
    assert j.ray_problem is None and j.not_ready() == [] and j.shard_problem(A0) is None


def test_ray_down_fails_fast_then_exits_once_after_the_grace():
    j = judge()
    first = j.handle(RayChecked(100.0, "Ray's raylet (pid 7) was killed by SIGKILL"))
    assert kinds(first) == ["WARNING"] and "10 s" in first[0].text
    assert j.ray_problem == "Ray is unavailable: Ray's raylet (pid 7) was killed by SIGKILL"
    assert j.not_ready() == [j.ray_problem]
    assert j.shard_problem(B0) == j.ray_problem  # every shard's calls fail with Ray's reason
    assert j.handle(RayChecked(109.9, "Ray's raylet (pid 7) was killed by SIGKILL")) == []
    (exit_,) = j.handle(RayChecked(110.0, "Ray's raylet (pid 7) was killed by SIGKILL"))
    assert isinstance(exit_, Exit)
    assert "raylet (pid 7)" in exit_.text and "did not come back within 10 s" in exit_.text and "exits" in exit_.text
    assert j.handle(RayChecked(111.0, "still down")) == []  # one Exit, one ERROR line


def test_ray_back_within_the_grace_is_forgiven():
    j = judge()
    j.handle(RayChecked(0.0, "Ray's GCS did not answer within 2 s"))
    back = j.handle(RayChecked(9.0, None))
    assert kinds(back) == ["INFO"] and j.ray_problem is None and j.not_ready() == []
    # A new outage starts its own grace.
    j.handle(RayChecked(20.0, "again"))
    assert j.handle(RayChecked(29.0, "again")) == []
    assert kinds(j.handle(RayChecked(30.0, "again"))) == ["Exit"]


def test_embedded_ray_down_fails_every_request_and_pings_no_shard():
    j = judge()
    j.handle(RayChecked(0.0, "Ray's GCS server (pid 9) was killed by SIGKILL"))
    assert j.request_problem() == j.request_problem(needs_ray=True) == j.ray_problem
    assert not j.pings_shards and j.degraded() == []
    j.handle(RayChecked(1.0, None))
    assert j.request_problem(needs_ray=True) is None and j.pings_shards


GCS_DOWN = "Ray's GCS did not answer within 2 s (RpcError: failed to connect to all addresses)"


def joined(**kw) -> HealthJudge:
    """The judge of a gateway joined to a Ray cluster (gateway.control)."""
    j = HealthJudge(ray_grace=kw.get("ray_grace", 600.0), restart_after=kw.get("restart_after", 30.0),
                    serve_while_ray_down=True, grace_setting="cluster.head_down_grace_s")
    j.handle(ShardsRunning(frozenset({A0, A1, B0})))
    return j


def test_joined_cluster_serves_while_its_head_is_down_then_exits_after_its_grace():
    j = joined()
    first = j.handle(RayChecked(100.0, GCS_DOWN))
    assert kinds(first) == ["WARNING"]
    assert "requests the shards can answer are served" in first[0].text and "600 s" in first[0].text
    assert j.ray_problem == f"Ray is unavailable: {GCS_DOWN}"
    # Requests that reach the shards go on; those that start or stop shards answer 503 at once.
    assert j.request_problem() is None and j.request_problem(needs_ray=True) == j.ray_problem
    assert j.shard_problem(A0) is None and j.pings_shards
    # Ready, and saying what does not work.
    assert j.not_ready() == []
    assert j.degraded() == [f"{j.ray_problem}; collections cannot be created, deleted or recovered until it is back"]
    assert j.handle(RayChecked(699.9, GCS_DOWN)) == []
    (exit_,) = j.handle(RayChecked(700.0, GCS_DOWN))
    assert isinstance(exit_, Exit)
    assert "did not come back within 600 s (setting cluster.head_down_grace_s)" in exit_.text
    assert j.handle(RayChecked(701.0, GCS_DOWN)) == []


def test_joined_cluster_head_back_within_the_grace():
    j = joined()
    j.handle(RayChecked(0.0, GCS_DOWN))
    assert kinds(j.handle(RayChecked(45.0, None))) == ["INFO"]
    assert j.ray_problem is None and j.degraded() == [] and j.request_problem(needs_ray=True) is None


def test_joined_cluster_judges_shards_while_ray_is_down_but_restarts_them_only_once_it_is_back():
    j = joined(restart_after=5.0)
    j.handle(RayChecked(0.0, GCS_DOWN))
    assert kinds(j.handle(ShardChecked(0.0, A1, SILENT, "no answer"))) == ["WARNING"]
    # A shard that does not answer fails fast, even while Ray is down ...
    assert j.shard_problem(A1) == "shard 1 of collection `a` does not answer (no answer)"
    assert j.not_ready() == [j.shard_problem(A1)] and j.shard_problem(A0) is None
    # ... but restarting it is the GCS's work: not while the GCS is away.
    for t in (5.0, 30.0, 100.0):
        assert j.handle(ShardChecked(t, A1, SILENT, "no answer")) == []
    j.handle(RayChecked(101.0, None))
    assert j.handle(ShardChecked(101.0, A1, SILENT, "no answer"))[-1] == RestartShard(A1)
    assert kinds(j.handle(ShardChecked(102.0, A1, ANSWERED))) == ["INFO"] and j.not_ready() == []


def test_joined_cluster_exits_at_once_when_its_ray_cluster_is_gone_for_good():
    j = joined()
    j.handle(RayChecked(0.0, GCS_DOWN))
    gone = "Ray's head answers as another cluster (RPC error: WrongClusterID)"
    effects = j.handle(RayChecked(12.0, gone, final=True))
    assert kinds(effects) == ["Exit"] and "no wait can bring it back" in effects[0].text and gone in effects[0].text
    assert j.handle(RayChecked(13.0, gone, final=True)) == []  # one Exit
    # Told at once too when it is the first thing seen (a warning, then the exit).
    assert kinds(joined().handle(RayChecked(0.0, gone, final=True))) == ["WARNING", "Exit"]


def test_joined_cluster_takes_an_unreachable_shard_for_silent_while_ray_is_down():
    # Unreachable, a shard would read as being restarted, and its calls would wait
    # for it; while the GCS is away nothing restarts it: they fail at once.
    j = joined()
    j.handle(RayChecked(0.0, GCS_DOWN))
    j.handle(ShardChecked(1.0, B0, STARTING, "its actor was unreachable (RpcError)"))
    assert j.shard_problem(B0) == "shard 0 of collection `b` does not answer (its actor was unreachable (RpcError))"
    j.handle(RayChecked(2.0, None))
    j.handle(ShardChecked(3.0, B0, STARTING, "Ray is restarting it"))
    assert j.shard_problem(B0) is None  # Ray is back: now it really is being restarted


def test_silent_shard_is_unavailable_at_once_and_restarted_after_the_threshold():
    j = judge(restart_after=30.0)
    effects = j.handle(ShardChecked(0.0, A1, SILENT, "no answer to a health check within 2 s"))
    assert kinds(effects) == ["WARNING"]
    assert j.shard_problem(A1) == "shard 1 of collection `a` does not answer (no answer to a health check within 2 s)"
    assert j.shard_problem(A0) is None and j.not_ready() == [j.shard_problem(A1)]
    for t in (1.0, 10.0, 29.9):  # a snapshot holding the GIL for a while is no reason to restart
        assert j.handle(ShardChecked(t, A1, SILENT, "x")) == []
    effects = j.handle(ShardChecked(30.0, A1, SILENT, "x"))
    assert effects[-1] == RestartShard(A1) and kinds(effects) == ["WARNING", "RestartShard"]
    # Not again at once: another threshold first.
    assert j.handle(ShardChecked(31.0, A1, SILENT, "x")) == []
    assert j.handle(ShardChecked(60.0, A1, SILENT, "x"))[-1] == RestartShard(A1)
    # It answers: available again.
    assert kinds(j.handle(ShardChecked(61.0, A1, ANSWERED))) == ["INFO"]
    assert j.shard_problem(A1) is None and j.not_ready() == []


def test_a_shard_ray_is_restarting_is_left_to_load():
    j = judge(restart_after=5.0)
    j.handle(ShardChecked(0.0, A0, SILENT, "x"))
    assert j.handle(ShardChecked(5.0, A0, SILENT, "x"))[-1] == RestartShard(A0)
    assert kinds(j.handle(ShardChecked(6.0, A0, STARTING, "Ray is restarting it"))) == ["WARNING"]
    # Not ready, but its calls are not failed: they wait for it, as reads ride through a crash.
    assert j.not_ready() == ["shard 0 of collection `a` is restarting (Ray is restarting it)"]
    assert j.shard_problem(A0) is None
    for t in (20.0, 100.0, 1000.0):  # a large shard may load for minutes
        assert j.handle(ShardChecked(t, A0, STARTING, "Ray is restarting it")) == []
    # Loaded but silent again: a fresh threshold from now.
    j.handle(ShardChecked(1001.0, A0, SILENT, "x"))
    assert j.handle(ShardChecked(1005.0, A0, SILENT, "x")) == []
    assert j.handle(ShardChecked(1006.0, A0, SILENT, "x"))[-1] == RestartShard(A0)


def test_a_dead_shard_is_reported_not_restarted():
    j = judge(restart_after=1.0)
    j.handle(ShardChecked(0.0, B0, DEAD, "its actor died"))
    assert j.handle(ShardChecked(100.0, B0, DEAD, "its actor died")) == []
    assert j.not_ready() == ["shard 0 of collection `b` is down: its actor died"]


def test_shard_readings_while_ray_is_down_are_rays_failure():
    j = judge(restart_after=1.0)
    j.handle(RayChecked(0.0, "gone"))
    assert j.handle(ShardChecked(0.0, A0, SILENT, "x"), ShardChecked(50.0, A0, SILENT, "x")) == []
    j.handle(RayChecked(5.0, None))
    assert j.not_ready() == []


def test_shards_no_longer_running_are_forgotten():
    j = judge(restart_after=1.0)
    j.handle(ShardChecked(0.0, B0, SILENT, "x"))
    j.handle(ShardsRunning(frozenset({A0, A1})))  # collection b deleted
    assert j.not_ready() == [] and j.handle(ShardChecked(10.0, B0, SILENT, "x")) == []
    j.handle(ShardsRunning(frozenset({A0, A1, B0})))  # created again: a fresh start
    assert j.shard_problem(B0) is None


def test_not_ready_names_every_silent_shard_in_order():
    j = judge()
    j.handle(ShardChecked(0.0, B0, SILENT, "x"), ShardChecked(0.0, A1, STARTING, "y"))
    assert j.not_ready() == ["shard 1 of collection `a` is restarting (y)", "shard 0 of collection `b` does not answer (x)"]


def test_unknown_event_is_refused():
    with pytest.raises(TypeError):
        judge().handle("tick")


def test_unavailable_shard_answers_qdrants_503():
    assert errors.status_and_text(ShardUnavailable("shard 0 of collection `a` does not answer")) == (
        503, "Shard temporarily unavailable: shard 0 of collection `a` does not answer")
    status, body = errors.error_response(ShardUnavailable("x"))
    assert status == 503 and body["status"] == {"error": "Shard temporarily unavailable: x"}


def test_shard_timeout_answers_qdrants_408():
    assert errors.status_and_text(ShardTimeout("search_batch", 5.0)) == (
        408, "Timeout: Timeout error: Operation 'Search' timed out after 5 seconds")
    assert errors.status_and_text(ShardTimeout("count", 0.5))[1].endswith("Operation 'count' timed out after 0.5 seconds")


def test_a_joined_gateways_ray_driver_outlives_its_grace(monkeypatch, caplog):
    """Ray ends a process whose GCS stays unreachable for RAY_gcs_rpc_server_reconnect_timeout_s
    (60 s by default): the gateway asks for a little longer than its own grace, so that
    it, not Ray, decides when to give up; a value in its environment stands."""
    from cluster import runtime

    env: dict[str, str] = {}
    monkeypatch.setattr(runtime.os, "environ", env)
    runtime._outlive_the_head(600.0)
    assert env == {"RAY_gcs_rpc_server_reconnect_timeout_s": "630"}
    env["RAY_gcs_rpc_server_reconnect_timeout_s"] = "60"
    with caplog.at_level(logging.WARNING, logger="cluster.runtime"):
        runtime._outlive_the_head(600.0)
    assert env["RAY_gcs_rpc_server_reconnect_timeout_s"] == "60"
    assert "Ray ends this server after 60 s without its head" in caplog.text


def test_a_replicated_shard_is_ready_while_one_of_its_replicas_answers():
    r0, r1 = ShardKey("r", 0, "r0"), ShardKey("r", 0, "r1")
    j = HealthJudge(ray_grace=10.0, restart_after=30.0)
    j.handle(ShardsRunning(frozenset({r0, r1})), RayChecked(0.0, None))
    j.handle(ShardChecked(0.0, r0, ANSWERED), ShardChecked(0.0, r1, SILENT, "no answer"))
    assert j.not_ready() == []  # reads go to r0
    assert j.degraded() == ["replica r1 of shard 0 of collection `r` does not answer (no answer)"]
    assert j.shard_problem(r1) is not None and j.shard_problem(r0) is None
    j.handle(ShardChecked(1.0, r0, SILENT, "no answer"))
    assert j.not_ready() == [f"replica {r} of shard 0 of collection `r` does not answer (no answer)" for r in ("r0", "r1")]
    assert j.degraded() == []
