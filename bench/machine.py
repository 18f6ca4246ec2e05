"""Is the machine ours? CPU used by everything vs by the benchmark, from /proc.

Development machines may be shared (other sessions run their tests on the same 2 cores),
and a benchmark that competes for CPU measures the competition. ``LoadMeter`` records,
over one side's run, the machine's busy CPU and the benchmark's own (this process, its
reaped and live descendants, and a server's process tree when given); the difference,
``foreign_cores``, is what other work took. ``wait_for_quiet`` holds a side back until
the machine is idle. ``autogroup`` sets the kernel's scheduling of sessions as groups
for the length of a run (the cluster benchmarks, whose "machines" are sessions).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from bench import procmem

# Above this many cores of other work on average, a side's figures are flagged.
QUIET_CORES = 0.25
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


@contextlib.contextmanager
def autogroup(enabled: bool) -> Iterator[bool | None]:
    """Linux's session autogrouping (``kernel.sched_autogroup_enabled``) set to
    ``enabled`` meanwhile, then back as it was; yields what is in effect (None: the
    kernel has no such knob). With it on, CPU is shared out evenly among sessions
    first and nice values count only within one session, so processes started as
    sessions of their own (a benchmark's Ray nodes and gateway) cannot yield to one
    another by priority as the threads of one machine do. Changing it takes root."""
    try:
        before = AUTOGROUP.read_text().strip() == "1"
    except OSError:
        yield None
        return
    if before != enabled:
        AUTOGROUP.write_text("1" if enabled else "0")
    try:
        yield enabled
    finally:
        if before != enabled:
            AUTOGROUP.write_text("1" if before else "0")


class LoadMeter:
    """Context manager; after exit ``.result`` has wall_s, machine_busy_cores, bench_cores,
    foreign_cores (all per second of wall time).

    ``server_root`` roots a server's tree that is not (or not only) our descendant; its
    processes are counted once even when they are also ours. The server must still be
    alive at exit: the CPU of a process that died unreaped by us is lost to the count.
    """

    def __init__(self, server_root: int | None = None):
        self.server_root = server_root
        self.result: dict = {}

    def _own(self) -> float:
        me = os.getpid()
        ru_self = resource.getrusage(resource.RUSAGE_SELF)
        ru_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        pids = set(procmem.process_tree(me))
        if self.server_root is not None:
            pids.update(procmem.process_tree(self.server_root))
        pids.discard(me)
        return (
            ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime + ru_kids.ru_stime + procmem.cpu_of(pids)
        )

    def __enter__(self) -> "LoadMeter":
        self.t0, self.busy0, self.own0 = time.perf_counter(), procmem.machine_busy_s(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        busy = procmem.machine_busy_s() - self.busy0
        own = self._own() - self.own0
        self.result = {
            "wall_s": wall,
            "machine_busy_cores": busy / wall,
            "bench_cores": own / wall,
            "foreign_cores": max(0.0, (busy - own) / wall),
        }


def wait_for_quiet(max_wait_s: float, threshold_cores: float = QUIET_CORES, window_s: float = 5.0) -> float:
    """Wait (at most ``max_wait_s``) until the machine's busy CPU over ``window_s`` is below
    ``threshold_cores``, the benchmark itself being idle meanwhile; returns the last reading.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        b0, t0 = procmem.machine_busy_s(), time.perf_counter()
        time.sleep(window_s)
        cores = (procmem.machine_busy_s() - b0) / (time.perf_counter() - t0)
        if cores < threshold_cores or time.monotonic() >= deadline:
            return cores
        print(f"  machine busy ({cores:.2f} cores used by other processes); waiting ...", flush=True)
