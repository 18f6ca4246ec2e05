"""The Dockerfile and the chart as a whole: checkov over both (every failed check
listed here with its reason), hadolint over the Dockerfile, and the config file the
chart renders run by a real ``shoal serve`` started as the image starts it.

No container engine runs here, so the image is not built: what is checked is that
its start command (ENTRYPOINT + CMD, less tini), its environment and its
HEALTHCHECK work with the chart's config file against a real server, and that the
install line names extras the project has."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib

import pytest
import yaml

from tests.api.rawhttp import call
from tests.conftest import REPO_ROOT, ShoalServer
from tests.deploy.tools import CHART, DOCKERFILE, find, python_tool, render, tool_env

# Every checkov check the chart fails on purpose, and why. (checkov does not look inside
# the RayCluster, a custom resource: its pod template repeats the StatefulSets' settings.)
CHECKOV_ACCEPTED = {
    "CKV_K8S_21": "the default namespace: objects go to the release's namespace (helm install -n); checkov "
                  "renders without one",
    "CKV_K8S_43": "image by digest: image.tag takes `tag@sha256:...`; a chart cannot know the digest of an image "
                  "the user builds",
    "CKV_K8S_15": "pull policy Always: release tags are immutable, so IfNotPresent; image.pullPolicy sets Always",
    "CKV_K8S_35": "secrets as files: Shoal reads its secrets from SHOAL__ variables (gateway/settings.py), never "
                  "logged or shown in /proc's command lines",
    "CKV2_K8S_6": "NetworkPolicy: not in the chart yet (Ray's ports must stay inside the cluster's network; "
                  "docs/kubernetes.md says so)",
}


def _checkov(*args: str) -> list[dict]:
    out = subprocess.run([*python_tool("checkov")[:-1], "checkov.main", *args, "--quiet", "--compact", "-o", "json"],
                         capture_output=True, text=True, env=tool_env(), timeout=500, cwd=REPO_ROOT)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    reports = json.loads(out.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_checkov_chart_and_dockerfile():
    for reports, framework in ((_checkov("-d", str(CHART), "--framework", "helm"), "helm"),
                               (_checkov("-f", str(DOCKERFILE), "--framework", "dockerfile"), "dockerfile")):
        assert reports and all(r["check_type"] == framework for r in reports)
        assert sum(r["summary"]["passed"] for r in reports) > 20  # it did look at the files
        failed = {c["check_id"] for r in reports for c in r["results"]["failed_checks"]}
        assert failed - set(CHECKOV_ACCEPTED) == set(), failed
        assert sum(r["summary"]["parsing_errors"] for r in reports) == 0


def test_hadolint_dockerfile():
    out = subprocess.run([*python_tool("hadolint", "hadolint"), str(DOCKERFILE)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, argument) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.removesuffix("\\").strip() if current else line.removesuffix("\\").strip()
        if not raw.rstrip().endswith("\\"):
            word, _, rest = current.partition(" ")
            lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def _exec_form(argument: str) -> list[str]:
    return json.loads(argument)


def test_dockerfile_shape():
    """Multi-stage, non-root, the README's install (with extras the project has), port 6333."""
    steps = _dockerfile()
    froms = [a for i, a in steps if i == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    assert ("USER", "10001:10001") in steps
    assert ("EXPOSE", "6333") in steps
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installs = [a for i, a in steps if i == "RUN" and "pip " in a]
    assert any('".[kubernetes]"' in a for a in installs) and "kubernetes" in extras
    assert any("python -m shard.sparse" in a for a in installs)  # the numba cache filled at build time
    assert any("python -m shard.scalar_graph" in a for a in installs)
    copied = {a.split()[0] for i, a in steps if i == "COPY" and not a.startswith("--from")}
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= copied  # every package of the project goes in


@pytest.fixture
def chart_server(tmp_path):
    """``shoal serve`` started as the image starts it (ENTRYPOINT + CMD, less tini, with the
    image's environment) with the config file the chart renders and the pods' API keys;
    only the address, port and storage folder are this machine's."""
    steps = _dockerfile()
    entry = _exec_form(next(a for i, a in steps if i == "ENTRYPOINT"))
    cmd = _exec_form(next(a for i, a in steps if i == "CMD"))
    assert entry[:2] == ["tini", "--"]
    argv = entry[2:] + cmd
    assert argv[:2] == ["shoal", "serve"]
    image_env = {}
    for instruction, argument in steps:
        if instruction == "ENV":
            image_env.update(pair.split("=", 1) for pair in shlex.split(argument))
    objects = render()
    config = yaml.safe_load(find(objects, "ConfigMap", "-config")["data"]["config.yaml"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in image_env.items() if not k.startswith("SHOAL__STORAGE__")}
    env.update(SHOAL__SERVICE__API_KEY="write-key-for-the-test", SHOAL__SERVICE__READ_ONLY_API_KEY="read-key")

    class ChartServer(ShoalServer):
        def command(self):
            return [sys.executable, "-m", "gateway", *argv[1:], "--config", str(tmp_path / "config.yaml"),
                    "--host", "127.0.0.1", "--port", str(self.port), "--storage", str(self.storage)]

    server = ChartServer(storage=tmp_path / "storage", log_dir=tmp_path, env=env)
    server.start()  # waits for /readyz without a key: the probes' path
    try:
        yield server, config, objects, steps
    finally:
        server.stop()


def test_chart_config_runs_shoal(chart_server):
    server, config, objects, steps = chart_server
    # The probes the chart gives the gateways answer without an API key.
    gateway = find(objects, "StatefulSet", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        status, _ = call("GET", server.url + gateway[probe]["httpGet"]["path"])
        assert status == 200, probe
    # The image's HEALTHCHECK, at this server's port.
    check = _exec_form(next(a for i, a in steps if i == "HEALTHCHECK").split(" CMD ", 1)[1])
    check = [part.replace(":6333/", f":{server.port}/") for part in check]
    assert subprocess.run([sys.executable, *check[1:]], timeout=30).returncode == 0
    # A collection created without replication_factor gets the chart's default.
    factor = config["storage"]["collection"]["replication_factor"]
    assert factor == 2
    url = f"{server.url}/collections/chart_defaults"
    status, _ = call("PUT", url, {"vectors": {"size": 2, "distance": "Dot"}})
    assert status == 401  # the API key from the Secret is required
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps({"vectors": {"size": 2, "distance": "Dot"}}).encode(),
                                     method="PUT", headers={"Content-Type": "application/json",
                                                            "api-key": "write-key-for-the-test"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60) as answer:
        assert answer.status == 200
    request = urllib.request.Request(url, headers={"api-key": "read-key"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60) as answer:
        params = json.loads(answer.read())["result"]["config"]["params"]
    assert params["replication_factor"] == factor
    assert params["write_consistency_factor"] == config["storage"]["collection"]["write_consistency_factor"]


def test_gateway_environment_is_valid_settings(tmp_path):
    """The gateway pod's settings (config file + environment, secrets and the pod's
    fields filled in) load: a misspelt SHOAL__ variable or setting in the chart fails."""
    from gateway import settings

    objects = render()
    config = find(objects, "ConfigMap", "-config")["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(config)
    container = find(objects, "StatefulSet", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for var in container["env"]:
        value = var.get("value", "10.0.0.7" if "fieldRef" in var.get("valueFrom", {}) else "a-secret")
        env[var["name"]] = value.replace("$(POD_NAME)", "shoal-gateway-0")
    shoal_env = {k: v for k, v in env.items() if k.startswith("SHOAL__")}
    saved = {k: os.environ.get(k) for k in shoal_env}
    os.environ.update(shoal_env)
    try:
        loaded = settings.load(tmp_path / "config.yaml")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert loaded.cluster.shard_node_resource == "shoal_storage"
    assert loaded.cluster.raft_host.startswith("shoal-gateway-0.")
    assert len(loaded.cluster.raft_peers) == 3 and loaded.cluster.secret is not None
    assert str(loaded.storage.storage_path) == "/var/lib/shoal"
    assert loaded.storage.collection.replication_factor == 2
    assert "shoal serve --config /etc/shoal/config.yaml" in container["args"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/shoal" and mounts["data"] == str(loaded.storage.storage_path)


def test_default_replication_factor_is_qdrants(base_url):
    """Without storage.collection settings a create that gives no factors gets 1 and 1
    (Qdrant's defaults); the chart's server above gets its configured 2."""
    url = f"{base_url}/collections/default_factors"
    assert call("PUT", url, {"vectors": {"size": 2, "distance": "Dot"}})[0] == 200
    try:
        params = call("GET", url)[1]["result"]["config"]["params"]
        assert (params["replication_factor"], params["write_consistency_factor"]) == (1, 1)
    finally:
        call("DELETE", url)
