"""The deployment checks' tools and the chart's rendering, shared by tests/deploy.

The tools live in ``.cache/deploy-tools`` (``scripts/test``'s ``deploy_tools``: helm
from npm, checkov, kubernetes-validate and hadolint from PyPI, kept apart from the
project's environment); a test whose tool is missing skips, saying which and how to
get it. The KubeRay CRD schemas are in the shared folder beside the repository.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT

TOOLS = REPO_ROOT / ".cache" / "deploy-tools"
CHART = REPO_ROOT / "helm" / "shoal"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
KUBERAY_SCHEMAS = REPO_ROOT.parent / "shared" / "schemas" / "kuberay-v1.7.0"
RAYJOB = REPO_ROOT / "deploy" / "kuberay" / "rayjob-ingest.yaml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
KUBERNETES_VERSION = "1.33.0"  # the API schemas the objects are checked against
INSTALL_HINT = "run scripts/test (its deploy_tools step installs it into .cache/deploy-tools)"


def helm() -> str:
    path = TOOLS / "helm" / "helm"
    if not path.exists():
        pytest.skip(f"helm is not installed: {INSTALL_HINT}")
    return str(path)


def python_tool(module: str, binary: str | None = None) -> list[str]:
    """The command that runs a tool installed into the tools' folder (PYTHONPATH: see ``tool_env``)."""
    path = TOOLS / "py" / ("bin/" + binary if binary is not None else module)
    if not path.exists():
        pytest.skip(f"{binary or module} is not installed: {INSTALL_HINT}")
    return [str(path)] if binary is not None else [sys.executable, "-m", module]


def tool_env() -> dict[str, str]:
    """The tools' folder first on PYTHONPATH, helm on PATH (checkov's helm framework runs it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TOOLS / "py")
    env["PATH"] = os.pathsep.join([str(TOOLS / "helm"), str(TOOLS / "py" / "bin"), env.get("PATH", "")])
    env.setdefault("BC_SKIP_MAPPING", "TRUE")  # checkov: no download of guidelines
    env["CHECKOV_RUN_SCA_PACKAGE_SCAN_V2"] = "false"
    return env


def values_args(values: Path | None) -> list[str]:
    return [] if values is None else ["-f", str(values)]


def render(*args: str, values: Path | None = None) -> list[dict[str, Any]]:
    """``helm template`` of the chart (release ``shoal``, namespace ``shoal``) as objects."""
    out = subprocess.run([helm(), "template", "shoal", str(CHART), "--namespace", "shoal",
                          *values_args(values), *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(objects: list[dict], kind: str, suffix: str = "") -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def crd_schema(name: str, version: str = "v1") -> dict:
    """The openAPIV3Schema of a KubeRay CRD, made strict: an object that lists its
    properties takes no other (as the API server's strict field validation)."""
    if not KUBERAY_SCHEMAS.is_dir():
        pytest.skip(f"the KubeRay CRD schemas are missing ({KUBERAY_SCHEMAS.name} in the shared schemas folder)")
    crd = yaml.safe_load((KUBERAY_SCHEMAS / name).read_text())
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
    return _strict(copy.deepcopy(schema))


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


def crd_problems(obj: dict, schema: dict) -> list[str]:
    """Every way ``obj`` breaks ``schema`` (apiVersion, kind and metadata are the API server's)."""
    import jsonschema

    body = {k: v for k, v in obj.items() if k != "metadata"}
    validator = jsonschema.Draft7Validator({**schema, "properties": {
        k: v for k, v in schema["properties"].items() if k != "metadata"}})
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def k8s_problems(objects: list[dict], folder: Path) -> list[str]:
    """kubernetes-validate, strict (an unknown field is an error), on every object of
    a built-in kind, against Kubernetes KUBERNETES_VERSION's API schemas (shipped in
    the package: no network); one line per problem."""
    cmd = python_tool("kubernetes_validate")
    builtin = [o for o in objects if not o["apiVersion"].startswith(("ray.io/", "monitoring.coreos.com/"))]
    path = folder / "objects.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    out = subprocess.run([*cmd, "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(path)],
                         capture_output=True, text=True, env=tool_env(), timeout=120)
    lines = (out.stdout + out.stderr).splitlines()
    problems = [line for line in lines if not line.startswith("INFO") and "passed for resource" not in line]
    passed = sum("passed for resource" in line for line in lines)
    if out.returncode != 0 or passed != len(builtin):
        problems.append(f"exit {out.returncode}, {passed} of {len(builtin)} objects passed")
    return problems


