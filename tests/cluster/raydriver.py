"""A Ray driver that a test steers one JSON line at a time.

Run as ``python -m tests.cluster.raydriver`` on a host with a Ray node (see
``raynodes.Driver``): it joins the cluster at ``RAY_ADDRESS``, prints a ready
line, then answers each request read from stdin with one line on stdout. One
long-lived driver lets a test submit a task, cut the network, heal it and wait
for the same task again, which a fresh ``python -c`` per step could not do.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

NODE_IP = "SHOAL_TEST_NODE_IP"  # the address of the host this driver runs on

@ray.remote(num_cpus=1, max_retries=0)
def where() -> str:
    """The address of the node this task ran on."""
    return ray.util.get_node_ip_address()


class Session:
    def __init__(self) -> None:
        self.tasks: dict[int, ray.ObjectRef] = {}

    def nodes(self) -> list[dict]:
        """Every node Ray knows, dead ones included."""
        return [{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
                 "cpus": n["Resources"].get("CPU", 0)} for n in ray.nodes()]

    def submit(self, node: str) -> int:
        """Start ``where`` on ``node`` only (hard affinity); a handle for ``wait``."""
        ref = where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        self.tasks[len(self.tasks)] = ref
        return len(self.tasks) - 1

    def wait(self, task: int, seconds: float) -> dict:
        """The task's result if it finished within ``seconds``, else ``done`` false."""
        ready, _ = ray.wait([self.tasks[task]], timeout=seconds)
        if not ready:
            return {"done": False}
        try:
            return {"done": True, "ip": ray.get(ready[0])}
        except Exception as e:  # noqa: BLE001 - reported to the test as data
            return {"done": True, "error": f"{type(e).__name__}: {e}"[:500]}


def main() -> None:
    # Answers alone go to stdout: whatever else prints (Ray does) goes to stderr, the log.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # The address comes from RAY_ADDRESS. The node's address must be given: Ray finds
    # local raylets with `ps`, which sees every host's here, and would pick the head's.
    ray.init(_node_ip_address=os.environ[NODE_IP], logging_level="WARNING", log_to_driver=False)
    session = Session()
    answers.write(json.dumps({"ok": ray.get_runtime_context().get_node_id()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"ok": getattr(session, request.pop("op"))(**request)}
        except Exception:  # noqa: BLE001 - the test shows it
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
