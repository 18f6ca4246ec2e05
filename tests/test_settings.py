"""Settings: defaults, YAML file, SHOAL__ environment variables, flags — in that order of strength."""

import pytest

from gateway import settings as settings_module
from gateway.cli import _overrides, _parser


def test_defaults_are_qdrants():
    s = settings_module.load()
    assert (s.service.host, s.service.http_port, s.service.max_request_size_mb) == ("0.0.0.0", 6333, 32)
    assert str(s.storage.storage_path) == "shoal_storage"
    assert s.cluster.ray_address is None and s.cluster.raft_port is None


def test_yaml_then_env_then_flags(tmp_path, monkeypatch):
    config = tmp_path / "shoal.yaml"
    config.write_text("service:\n  http_port: 7000\n  host: 10.1.2.3\nstorage:\n  wal_capacity_mb: 8\n")
    assert settings_module.load(config).service.http_port == 7000
    monkeypatch.setenv("SHOAL__SERVICE__HTTP_PORT", "7100")
    s = settings_module.load(config)
    assert (s.service.http_port, s.service.host, s.storage.wal_capacity_mb) == (7100, "10.1.2.3", 8)
    args = _parser().parse_args(["serve", "--config", str(config), "--host", "127.0.0.1", "--port", "7200"])
    s = settings_module.load(args.config, _overrides(args))
    assert (s.service.http_port, s.service.host, s.storage.wal_capacity_mb) == (7200, "127.0.0.1", 8)


def test_ray_address_env_is_honoured(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    args = _parser().parse_args(["serve"])
    assert settings_module.load(None, _overrides(args)).cluster.ray_address == "ray://head:10001"


def test_unknown_setting_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("service:\n  htp_port: 1\n")
    with pytest.raises(Exception, match="htp_port"):
        settings_module.load(config)


def test_cluster_flags(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    args = _parser().parse_args(["serve", "--ray-address", "10.0.0.9:6379", "--raft-host", "10.0.0.5",
                                 "--raft-port", "7335", "--peers", "10.0.0.6:7335, 10.0.0.7:7335",
                                 "--cluster-secret", "s3cret"])
    c = settings_module.load(None, _overrides(args)).cluster
    assert (c.ray_address, c.raft_host, c.raft_port) == ("10.0.0.9:6379", "10.0.0.5", 7335)  # the flag wins
    assert c.raft_peers == ["10.0.0.6:7335", "10.0.0.7:7335"] and c.secret.get_secret_value() == "s3cret"
    with pytest.raises(Exception, match="cluster.secret is required"):
        settings_module.load(None, _overrides(_parser().parse_args(["serve", "--peers", "10.0.0.6:7335"])))
    with pytest.raises(Exception, match="service.workers must be 1 with cluster.ray_address"):
        settings_module.load(None, {"service": {"workers": 0}, "cluster": {"ray_address": "10.0.0.1:6379"}})


def _leaves(model: type, prefix: str = "") -> list[str]:
    """Every setting's dotted path (``service.http_port``), sections walked into."""
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out += _leaves(kind, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_every_setting_is_in_the_readme_table():
    """README's configuration table is the settings' reference: a setting added
    without its line there (or a line left for a setting removed) fails here."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_.]+)`", section, flags=re.M))
    assert documented == set(_leaves(settings_module.Settings))
