"""Is Shoal's Ray alive, and does every shard answer? Fail fast, say not ready,
then recover or exit.

Without a watch, a dead raylet or GCS left ``/readyz`` answering 200 while
searches hung, until Ray's own timeouts ended the process a minute later; a
stopped shard process hung every request to its collection. So, every
``CHECK_EVERY`` seconds, the monitor asks Ray whether it is alive and pings
every running shard through Ray's control path, each bounded by a timeout:

- Ray down: every API request answers 503 at once ("Shard temporarily
  unavailable"), ``/healthz``, ``/livez`` and ``/readyz`` answer 503; if Ray
  is not back within ``cluster.ray_down_grace_s`` the server logs one ERROR
  line and exits with a non-zero status.
- On a joined cluster (``serve_while_ray_down``), Ray down usually means its
  head (the GCS) is: the shards, on other machines, still answer over their
  sockets, and with GCS fault tolerance the head comes back with every actor.
  So only the requests that need Ray itself (starting or stopping shards:
  creating, deleting or recovering a collection) answer 503; the others are
  served, shards are still pinged (a silent one fails fast, but is restarted
  only once Ray is back: restarting is the GCS's work), ``/readyz`` stays 200
  and names the degradation, and the server exits only after the longer
  ``cluster.head_down_grace_s``; or at once when Ray is gone for good (the
  head came back as another cluster, having no GCS fault tolerance; or the
  GCS declared this node dead: ``runtime.ClusterGone``).
- A shard silent (its ping unanswered): calls to it fail at once with 503 and
  ``/readyz`` names it; silent for ``cluster.shard_restart_after_s`` (long
  enough for a snapshot or a graph save holding the GIL), it is restarted
  through Ray and reloads its storage. A shard Ray is already restarting (after
  a crash, say) is left to load, however long that takes; calls to it wait for
  it, bounded by ``cluster.shard_call_timeout_s``.

``HealthJudge`` decides, as a pure object: readings in (``handle(*events)``),
effects out (log lines, restarts, exit), plus what the gateway asks (``ray_problem``,
``shard_problem``, ``not_ready``). ``HealthMonitor`` is the thin async shell
that takes the readings (through ``cluster.runtime``, where every Ray call
lives) and carries out the effects. (dask.distributed's worker state machine
is the model.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from cluster import runtime

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between two rounds of checks

# What a shard's ping found (the words of ``cluster.runtime.ping``).
ANSWERED, SILENT, STARTING, DEAD = runtime.ANSWERED, runtime.SILENT, runtime.STARTING, runtime.DEAD


# ------------------------------------------------------------------ vocabulary


@dataclass(frozen=True, order=True)
class ShardKey:
    collection: str
    shard: int
    replica: str = ""  # of a replicated shard, each replica is watched on its own

    def __str__(self) -> str:
        where = f"shard {self.shard} of collection `{self.collection}`"
        return f"replica {self.replica} of {where}" if self.replica else where


@dataclass(frozen=True)
class ShardsRunning:
    """The shards to watch now; any other is forgotten."""

    keys: frozenset[ShardKey]


@dataclass(frozen=True)
class RayChecked:
    """Ray's liveness at ``now``: ``problem`` is None when it answered; ``final``
    when no waiting can bring it back (``runtime.ClusterGone``)."""

    now: float
    problem: str | None
    final: bool = False


@dataclass(frozen=True)
class ShardChecked:
    """One shard's ping at ``now``: ``state`` is ANSWERED, SILENT, STARTING or DEAD."""

    now: float
    key: ShardKey
    state: str
    detail: str = ""


@dataclass(frozen=True)
class Log:
    level: int
    text: str


@dataclass(frozen=True)
class RestartShard:
    key: ShardKey


@dataclass(frozen=True)
class Exit:
    """Ray did not come back: the server must end (non-zero). ``text`` is the one
    ERROR line that says so."""

    text: str


Event = ShardsRunning | RayChecked | ShardChecked
Effect = Log | RestartShard | Exit


@dataclass
class _Shard:
    state: str = ANSWERED
    detail: str = ""
    silent_since: float | None = None  # first unanswered ping of this silence
    restarted_at: float | None = None


# ----------------------------------------------------------------------- judge


@dataclass
class HealthJudge:
    """The decisions, without I/O or clock: times come in with the events."""

    ray_grace: float  # seconds Ray may stay down before the server exits
    restart_after: float  # seconds a shard may stay silent before it is restarted
    # A joined cluster: while Ray is down, serve what the shards can answer (see above).
    serve_while_ray_down: bool = False
    grace_setting: str = "cluster.ray_down_grace_s"  # the setting ray_grace came from, named on exit
    _ray_problem: str | None = None
    _ray_down_since: float | None = None
    _exiting: bool = False
    _shards: dict[ShardKey, _Shard] = field(default_factory=dict)

    # What the gateway asks.

    @property
    def ray_problem(self) -> str | None:
        """Why Ray is unavailable, or None while it answers."""
        return None if self._ray_problem is None else f"Ray is unavailable: {self._ray_problem}"

    def request_problem(self, needs_ray: bool = False) -> str | None:
        """Why an API request must fail at once, or None. While Ray is down:
        every request on the embedded instance; on a joined cluster only one
        that ``needs_ray`` (starts or stops shards), the others go to the shards."""
        if self._ray_problem is None or (self.serve_while_ray_down and not needs_ray):
            return None
        return self.ray_problem

    @property
    def pings_shards(self) -> bool:
        """Whether to ping the shards now: while Ray answers, and on a joined
        cluster also while it does not (they may well answer)."""
        return self._ray_problem is None or self.serve_while_ray_down

    def shard_problem(self, key: ShardKey) -> str | None:
        """Why calls to this shard must fail now, or None. A shard Ray is
        restarting is not failed: its calls wait for it (bounded), as reads
        always rode through a crash."""
        if self._ray_problem is not None and not self.serve_while_ray_down:
            return self.ray_problem
        shard = self._shards.get(key)
        if shard is None or shard.state in (ANSWERED, STARTING):
            return None
        return self._describe(key, shard)

    @staticmethod
    def _describe(key: ShardKey, shard: _Shard) -> str:
        if shard.state == STARTING:
            return f"{key} is restarting ({shard.detail})"
        if shard.state == DEAD:
            return f"{key} is down: {shard.detail}"
        return f"{key} does not answer ({shard.detail})"

    def _silent(self) -> tuple[list[ShardKey], list[ShardKey]]:
        """The shards and replicas that do not answer: (those whose shard has no other
        replica that does, the others)."""
        answering = {(k.collection, k.shard) for k, s in self._shards.items() if s.state == ANSWERED}
        silent = [k for k in sorted(self._shards) if self._shards[k].state != ANSWERED]
        return ([k for k in silent if (k.collection, k.shard) not in answering],
                [k for k in silent if (k.collection, k.shard) in answering])

    def not_ready(self) -> list[str]:
        """Every reason the server is not ready, Ray's first; empty when ready. A
        replicated shard counts as long as one of its replicas answers."""
        if self._ray_problem is not None and not self.serve_while_ray_down:
            return [self.ray_problem]
        return [self._describe(k, self._shards[k]) for k in self._silent()[0]]

    def degraded(self) -> list[str]:
        """What does not work while the server is still ready: Ray on a joined cluster
        whose head is down, replicas that do not answer while another replica of their
        shard does; empty otherwise."""
        out = [self._describe(k, self._shards[k]) for k in self._silent()[1]]
        if self._ray_problem is not None and self.serve_while_ray_down:
            out.insert(0, f"{self.ray_problem}; collections cannot be created, deleted or recovered until it is back")
        return out

    # Events in, effects out.

    def handle(self, *events: Event) -> list[Effect]:
        effects: list[Effect] = []
        for event in events:
            if isinstance(event, ShardsRunning):
                self._shards = {k: self._shards.get(k) or _Shard() for k in event.keys}
            elif isinstance(event, RayChecked):
                effects += self._ray(event)
            elif isinstance(event, ShardChecked):
                effects += self._shard(event)
            else:
                raise TypeError(f"not a health event: {event!r}")
        return effects

    def _ray(self, event: RayChecked) -> list[Effect]:
        if event.problem is None:
            if self._ray_problem is None:
                return []
            down_for = event.now - self._ray_down_since
            self._ray_problem = self._ray_down_since = None
            return [Log(logging.INFO, f"Ray answers again after {down_for:.1f} s; requests are served")]
        effects: list[Effect] = []
        if self._ray_problem is None:
            self._ray_down_since = event.now
            meanwhile = ("requests the shards can answer are served, collections cannot be created, deleted or "
                         "recovered," if self.serve_while_ray_down else "requests answer 503,")
            effects.append(Log(logging.WARNING, f"Ray is unavailable: {event.problem}; {meanwhile} "
                                                f"and the server exits if Ray is not back within {self.ray_grace:g} s"))
        self._ray_problem = event.problem
        if self._exiting:
            return effects
        if event.final:
            self._exiting = True
            effects.append(Exit(f"Ray is unavailable: {event.problem}; no wait can bring it back: the server exits"))
        elif event.now - self._ray_down_since >= self.ray_grace:
            self._exiting = True
            effects.append(Exit(f"Ray is unavailable: {event.problem}; it did not come back within "
                                f"{self.ray_grace:g} s (setting {self.grace_setting}): the server exits"))
        return effects

    def _shard(self, event: ShardChecked) -> list[Effect]:
        shard = self._shards.get(event.key)
        if shard is None or (self._ray_problem is not None and not self.serve_while_ray_down):
            return []  # not watched, or Ray's failure rather than the shard's
        was = shard.state
        # Nothing restarts an actor while the GCS is away: one that cannot be reached then is silent.
        state = SILENT if event.state == STARTING and self._ray_problem is not None else event.state
        shard.state, shard.detail = state, event.detail
        if state == ANSWERED:
            shard.silent_since = shard.restarted_at = None
            return [Log(logging.INFO, f"{event.key} answers again")] if was != ANSWERED else []
        effects: list[Effect] = []
        if state != was:
            effects.append(Log(logging.WARNING, self._describe(event.key, shard) + (
                "; requests to it wait for it" if state == STARTING else "; requests to it answer 503")))
        if state != SILENT:
            shard.silent_since = None  # Ray is restarting it (let it load), or cannot
            return effects
        if shard.silent_since is None:
            shard.silent_since = event.now
        if self._ray_problem is not None:
            return effects  # restarting is the GCS's work: once Ray is back
        last = max(shard.silent_since, shard.restarted_at or shard.silent_since)
        if event.now - last >= self.restart_after:
            shard.restarted_at = event.now
            effects.append(Log(logging.WARNING, f"{event.key} has not answered for "
                                                f"{event.now - shard.silent_since:.0f} s: Ray restarts it"))
            effects.append(RestartShard(event.key))
        return effects


# ----------------------------------------------------------------------- shell


class HealthMonitor:
    """Runs the checks every CHECK_EVERY seconds and carries out the judge's
    effects. ``running`` lists the running collections (each with ``name`` and
    ``shards``, handles with ``index``, ``ping``, ``restart``, ``set_problem``);
    ``on_exit`` is called once, with the ERROR line's text, when the server must end.
    ``serve_while_ray_down`` and ``grace_setting``: see ``HealthJudge``."""

    def __init__(self, running: Callable[[], Iterable], on_exit: Callable[[str], None], *, ray_grace: float,
                 restart_after: float, ping_timeout: float, clock: Callable[[], float] = time.monotonic,
                 serve_while_ray_down: bool = False, grace_setting: str = "cluster.ray_down_grace_s"):
        self.judge = HealthJudge(ray_grace=ray_grace, restart_after=restart_after,
                                 serve_while_ray_down=serve_while_ray_down, grace_setting=grace_setting)
        self._running = running
        self._on_exit = on_exit
        self._ping_timeout = ping_timeout
        self._clock = clock
        self._task: asyncio.Task | None = None
        self._handles: dict[ShardKey, object] = {}
        self.exit_reason: str | None = None

    @property
    def ray_problem(self) -> str | None:
        return self.judge.ray_problem

    def request_problem(self, needs_ray: bool = False) -> str | None:
        return self.judge.request_problem(needs_ray)

    def not_ready(self) -> list[str]:
        return self.judge.not_ready()

    def degraded(self) -> list[str]:
        return self.judge.degraded()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            started = self._clock()
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watch must go on
                log.exception("health check failed")
            await asyncio.sleep(max(0.0, CHECK_EVERY - (self._clock() - started)))

    def _watch(self) -> dict[ShardKey, object]:
        """The running shards' handles, and the judge told of them. A key whose
        handle changed (a collection deleted and created again) starts afresh."""
        handles = {ShardKey(c.name, s.index, replica): handle for c in self._running() for s in c.shards
                   for replica, handle in (getattr(s, "replicas", None) or {"": s}).items()}
        kept = frozenset(k for k, h in handles.items() if self._handles.get(k) is h)
        self.judge.handle(ShardsRunning(kept), ShardsRunning(frozenset(handles)))
        self._handles = handles
        return handles

    async def check(self) -> None:
        """One round: Ray, then (while Ray answers, or on a joined cluster) every
        shard, at once."""
        handles = self._watch()
        problem = await runtime.ray_problem(self._ping_timeout)
        effects = self.judge.handle(RayChecked(self._clock(), problem, isinstance(problem, runtime.ClusterGone)))
        if handles and self.judge.pings_shards:
            pinged = handles
            pings = await asyncio.gather(*(h.ping(self._ping_timeout) for h in pinged.values()), return_exceptions=True)
            now = self._clock()
            handles = self._watch()  # a shard stopped by a delete meanwhile is no news
            for (key, handle), ping in zip(pinged.items(), pings):
                if handles.get(key) is handle:
                    state, detail = (SILENT, repr(ping)) if isinstance(ping, BaseException) else ping
                    effects += self.judge.handle(ShardChecked(now, key, state, detail))
        for key, handle in handles.items():
            handle.set_problem(self.judge.shard_problem(key))
        for effect in effects:
            self._carry_out(effect, handles)

    def _carry_out(self, effect: Effect, handles: dict) -> None:
        if isinstance(effect, Log):
            log.log(effect.level, "%s", effect.text)
        elif isinstance(effect, RestartShard):
            try:
                handles[effect.key].restart()
            except Exception as exc:  # noqa: BLE001 - tried again after another restart_after
                log.warning("%s could not be restarted: %s", effect.key, exc)
        elif isinstance(effect, Exit):
            if self.exit_reason is None:
                self.exit_reason = effect.text
                log.error("%s", effect.text)
                self._on_exit(effect.text)
