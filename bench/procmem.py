"""Resident memory of a process tree, read from /proc (Linux only, no psutil needed).

Shoal runs as a gateway process plus Ray's processes (gcs_server, raylet, workers hosting
the shard actors). Ray starts some of them in new sessions, so "descendants" alone can miss
none today but is fragile; the tree is taken as the union of the descendants of the root
pid and every process sharing the root's process group. RSS summed over processes counts
shared pages (Ray's object store, shared libraries) once per process, so PSS (shared pages
divided among their users, from smaps_rollup) is reported beside it as the fairer total.
"""

from __future__ import annotations

import os


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _stat_fields(pid: int) -> tuple[int, int] | None:
    """(ppid, pgid) of pid, or None when it has gone."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[2])


def start_ticks(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot: with the pid, a process's identity."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def process_tree(root: int) -> list[int]:
    """root, its descendants, and the members of root's process group."""
    info = {pid: f for pid in _all_pids() if (f := _stat_fields(pid)) is not None}
    if root not in info:
        return []
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in info.items():
        children.setdefault(ppid, []).append(pid)
    tree, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in tree:
            continue
        tree.add(pid)
        stack.extend(children.get(pid, []))
    root_pgid = info[root][1]
    tree.update(pid for pid, (_, pgid) in info.items() if pgid == root_pgid)
    return sorted(tree)


def _kb_field(text: str | None, name: str) -> int:
    if text is None:
        return 0
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    return _kb_field(_read(f"/proc/{pid}/status"), "VmRSS")


def pss_kb(pid: int) -> int:
    return _kb_field(_read(f"/proc/{pid}/smaps_rollup"), "Pss")


def tree_memory(root: int) -> dict:
    """Summed RSS and PSS (MiB) over ``process_tree(root)`` with a per-process list."""
    procs = []
    for pid in process_tree(root):
        comm = (_read(f"/proc/{pid}/comm") or "?").strip()
        procs.append({"pid": pid, "comm": comm, "rss_kb": rss_kb(pid), "pss_kb": pss_kb(pid)})
    return {
        "rss_mib": sum(p["rss_kb"] for p in procs) / 1024,
        "pss_mib": sum(p["pss_kb"] for p in procs) / 1024,
        "processes": len(procs),
        "per_process": procs,
    }


def self_memory() -> dict:
    """RSS and PSS (MiB) of the calling process."""
    pid = os.getpid()
    return {"rss_mib": rss_kb(pid) / 1024, "pss_mib": pss_kb(pid) / 1024}


def memory_since(before: dict) -> dict:
    """This process's memory now, and how much it grew since ``before`` (self_memory())."""
    after = self_memory()
    return {
        "process_rss_mib": after["rss_mib"],
        "process_pss_mib": after["pss_mib"],
        "baseline_rss_mib": before["rss_mib"],
        "added_rss_mib": after["rss_mib"] - before["rss_mib"],
    }


def machine_busy_s() -> float:
    """CPU seconds all CPUs have spent busy since boot (user+nice+system+irq+softirq+steal)."""
    fields = [int(x) for x in (_read("/proc/stat") or "cpu 0").splitlines()[0].split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user+system) used so far by the live processes of ``process_tree(root)``."""
    return cpu_of(process_tree(root))


def cpu_of(pids) -> float:
    """CPU seconds (user+system) used so far by the given live processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        text = _read(f"/proc/{pid}/stat")
        if text is None:
            continue
        rest = text[text.rindex(")") + 2 :].split()
        total += int(rest[11]) + int(rest[12])
    return total / tick


def thread_count(pid: int | None = None) -> int:
    """OS threads of a process (default: the caller), to show an engine's thread pools."""
    return _kb_field(_read(f"/proc/{pid or os.getpid()}/status"), "Threads")


def pid_listening_on(port: int) -> int | None:
    """The pid owning a TCP socket listening on ``port`` (IPv4 or IPv6), if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = _read(table)
        if text is None:
            continue
        for line in text.splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    candidates = []
    for pid in _all_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    candidates.append(pid)
                    break
            except OSError:
                continue
    # Pre-forked servers share the socket; the lowest pid is normally the parent.
    return min(candidates) if candidates else None
