"""The placement controller under random faults: every invariant holds at every step,
and the cluster converges once the faults stop (``tests.controller_sim``)."""

from __future__ import annotations

import random

import pytest

from cluster.controller import TransferFailed
from cluster.metadata_ops import DeleteCollection, UpdateCollection
from tests.controller_sim import Sim, as_tuple, create_op, not_converged, problems


# ----------------------------------------------------------- randomised


def chaos(sim: Sim, rng: random.Random) -> None:
    """One random fault, or none."""
    roll = rng.random()
    down = [n for n in sim.nodes if n not in sim.up]
    if roll < 0.05 and len(sim.up) > 2:
        sim.lose(rng.choice(sorted(sim.up)))
    elif roll < 0.09 and down:
        sim.up.add(rng.choice(down))
    elif roll < 0.10:
        sim.nodes.append(f"n{len(sim.nodes) + 1}")
        sim.up.add(sim.nodes[-1])
    elif roll < 0.20 and sim.running:
        sim.crash(rng.choice(sorted(sim.running)), rng.choice([None, 1.0, 2.0, 4.0, 8.0]))
    elif roll < 0.25 and sim.transfers:
        target = rng.choice(sorted(sim.transfers))
        _, _, version = sim.transfers.pop(target)
        sim._reply(TransferFailed(*as_tuple(target), version, "chaos"))
    elif roll < 0.28:
        name = rng.choice(sorted(sim.state["collections"]))
        sim.gateway(UpdateCollection(name, {"params": {"replication_factor": rng.randint(1, 3)}}))
    elif roll < 0.31:
        sim.drop_batch, sim.report_drops = True, rng.random() < 0.5
    elif roll < 0.32:
        sim.gateway(DeleteCollection("b"))
        inc = f"{rng.getrandbits(128):032x}"
        sim.gateway(create_op("b", 2, rng.randint(1, 3), sorted(sim.up), inc))


@pytest.mark.parametrize("seed", range(100))  # about 0.15 s each
def test_random_faults_keep_the_invariants_and_the_cluster_converges(seed):
    rng = random.Random(seed)
    sim = Sim(["n1", "n2", "n3", "n4"], grace=3.0, retry=5.0, rng=rng)
    sim.tick(0.0)
    sim.gateway(create_op("a", 3, 2, sim.nodes))
    sim.gateway(create_op("b", 2, 3, sim.nodes, "b" * 32))
    sim.lose_replies = 0.05
    for step in range(150):
        chaos(sim, rng)
        sim.step()
        assert problems(sim) == [], f"step {step}"
    sim.lose_replies, sim.drop_batch = 0.0, False
    sim.up.update(sim.nodes)  # the faults stop, and every node is back
    for step in range(300):
        if not_converged(sim) is None:
            break
        sim.step()
        assert problems(sim) == [], f"calm step {step}"
    assert not_converged(sim) is None
    assert sim.c.lost_nodes == frozenset() and sum(sim.acked.values()) > 0
