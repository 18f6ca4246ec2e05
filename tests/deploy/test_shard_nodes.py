"""``cluster.shard_node_resource``: with it, only the Ray nodes that advertise the
resource host shards (the chart's storage pods), and Ray itself keeps an unpinned
shard there. A real two-node Ray cluster on 127.0.0.1, in a process of its own
with a private temporary folder and token (it touches no other Ray)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

from tests.cluster.raynodes import kill_session
from tests.conftest import REPO_ROOT


def test_only_resourced_nodes_host_shards():
    # A short folder: Ray's Unix socket paths live under it.
    folder = tempfile.mkdtemp(prefix="shoal-rn-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update(TMPDIR=folder, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0", RAY_worker_niceness="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    proc = subprocess.Popen([sys.executable, "-m", "tests.deploy.shard_nodes_probe"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        kill_session(proc.pid)  # whatever of its Ray is left
        shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == 0, stderr[-4000:]
    seen = json.loads(stdout.strip().splitlines()[-1])
    assert sorted(seen["all"]) == sorted([seen["head"], seen["storage"]])  # no resource set: every node with CPUs
    assert seen["marked"] == [seen["storage"]]
    assert seen["placed"] == seen["storage"]
