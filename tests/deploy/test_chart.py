"""The Helm chart and the RayJob manifest: helm lint and template with the default
values and each example, every rendered object validated strictly (Kubernetes' API
schemas; KubeRay's CRD schemas for the RayCluster and the RayJob), and a misspelt
field shown to be caught."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.deploy.tools import (
    CHART,
    EXAMPLES,
    RAYJOB,
    crd_problems,
    crd_schema,
    find,
    helm,
    k8s_problems,
    render,
    values_args,
)

VALUES = [None, *EXAMPLES]
VALUE_IDS = ["defaults", *(p.stem for p in EXAMPLES)]


@pytest.mark.parametrize("values", VALUES, ids=VALUE_IDS)
def test_helm_lint(values):
    out = subprocess.run([helm(), "lint", "--strict", str(CHART), *values_args(values)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", VALUES, ids=VALUE_IDS)
def test_rendered_objects_are_valid(values, tmp_path):
    objects = render(values=values)
    kinds = sorted(o["kind"] for o in objects)
    for kind in ("ConfigMap", "PodDisruptionBudget", "RayCluster", "Service", "StatefulSet"):
        assert kind in kinds, kinds
    assert k8s_problems(objects, tmp_path) == []
    assert crd_problems(find(objects, "RayCluster"), crd_schema("ray.io_rayclusters.yaml")) == []
    # No offline schema of the Prometheus Operator's CRDs: the ServiceMonitor is only rendered.
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert all(m["apiVersion"] == "monitoring.coreos.com/v1" for m in monitors)


def test_the_examples_turn_on_what_they_say():
    production = render(values=CHART / "examples" / "production.yaml")
    assert find(production, "StatefulSet", "-gateway")["spec"]["replicas"] == 3
    assert find(production, "StatefulSet", "-storage")["spec"]["replicas"] == 3
    assert "redisAddress" in find(production, "RayCluster")["spec"]["gcsFaultToleranceOptions"]
    assert [o["kind"] for o in production].count("ServiceMonitor") == 1
    assert not any(o["kind"] == "Secret" for o in production)  # existingSecret
    small = render(values=CHART / "examples" / "small.yaml")
    assert find(small, "StatefulSet", "-gateway")["spec"]["replicas"] == 1


def test_a_misspelt_field_is_caught(tmp_path):
    """The strict checks can fail: a misspelt securityContext field, which lands in
    the StatefulSets and in the RayCluster's head, is reported by both."""
    objects = render("--set", "securityContext.readOnlyRootFilesytem=true")
    problems = k8s_problems(objects, tmp_path)
    assert any("readOnlyRootFilesytem" in p for p in problems), problems
    ray = crd_problems(find(objects, "RayCluster"), crd_schema("ray.io_rayclusters.yaml"))
    assert any("readOnlyRootFilesytem" in p for p in ray), ray


def test_rayjob_manifest_is_valid_and_uses_the_charts_cluster():
    job = yaml.safe_load(RAYJOB.read_text())
    assert crd_problems(job, crd_schema("ray.io_rayjobs.yaml")) == []
    objects = render()
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": find(objects, "RayCluster")["metadata"]["name"]}
    assert "rayClusterSpec" not in job["spec"]  # it makes no cluster of its own
    service = find(objects, "Service", "shoal")
    entry = job["spec"]["entrypoint"]
    assert entry.startswith("shoal ingest ")
    assert f"--url http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']} " in entry
    head_env = find(objects, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert "SHOAL_API_KEY" in {e["name"] for e in head_env} and "$SHOAL_API_KEY" in entry
    broken = {**job, "spec": {**job["spec"], "entrypointNumCPUs": 1}}
    assert crd_problems(broken, crd_schema("ray.io_rayjobs.yaml"))  # the check can fail


def test_gateways_find_each_other_by_stable_names():
    objects = render()
    gateway = find(objects, "StatefulSet", "-gateway")
    env = {e["name"]: e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    peers = yaml.safe_load(env["SHOAL__CLUSTER__RAFT_PEERS"]["value"])
    headless = find(objects, "Service", "-gateway-headless")["metadata"]["name"]
    assert peers == [f"shoal-gateway-{i}.{headless}.shoal.svc.cluster.local:6335" for i in range(3)]
    assert env["SHOAL__CLUSTER__RAFT_HOST"]["value"] == f"$(POD_NAME).{headless}.shoal.svc.cluster.local"
    assert find(objects, "Service", "-gateway-headless")["spec"]["publishNotReadyAddresses"] is True
    assert gateway["spec"]["podManagementPolicy"] == "Parallel"
    storage = find(objects, "StatefulSet", "-storage")
    container = storage["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    # The pod's command as its shell runs it, `ray` standing in as a function that
    # prints its arguments: the shard resource, and the pod's name as the Ray node's
    # placement name (cluster.runtime.NODE_NAME_PREFIX), so a restarted pod keeps its replicas.
    script = "ray() { printf '%s\\n' \"$@\"; }\n" + container["args"][0].replace("exec ray start", "ray start")
    printed = subprocess.run(["sh", "-ec", script], capture_output=True, text=True, check=True, timeout=30,
                             env={"POD_NAME": "shoal-storage-1", "POD_IP": "10.0.0.5", "RAY_ADDRESS": "head:6379"})
    resources = next(a for a in printed.stdout.splitlines() if a.startswith("--resources="))
    assert json.loads(resources.removeprefix("--resources=")) == {"shoal_storage": 1, "shoal-node:shoal-storage-1": 1}
    assert env["SHOAL__CLUSTER__SHARD_NODE_RESOURCE"]["value"] == "shoal_storage"
    mounts = {m["name"]: m["mountPath"] for m in storage["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["data"] == "/var/lib/shoal"  # the gateways' storage path: replicas live under it
    head = find(objects, "RayCluster")["spec"]["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0"
