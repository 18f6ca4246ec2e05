"""Shoal's settings: one typed tree, loaded once at the entry point.

Sources, strongest first: command-line flags, environment variables
(``SHOAL__SERVICE__HTTP_PORT=7000``: prefix ``SHOAL__``, ``__`` between
levels), the YAML file given with ``--config``, the defaults below. Every
setting is documented beside its default; ``docs/configuration.md`` is
generated from these docstrings' content by hand and lists them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    host: str = Field("0.0.0.0", description="Address the REST API listens on.")
    http_port: int = Field(6333, description="Port of the REST API (Qdrant's default).")
    max_request_size_mb: int = Field(32, description="Largest request body accepted, in MiB (Qdrant's default).")
    workers: int = Field(
        1,
        description="HTTP processes sharing the port (SO_REUSEPORT); 0 = one per core. "
        "Extra workers reach shards on this machine directly; collection changes go through the first.",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Seconds a request body may take to arrive; then 408 and the connection is closed."
    )
    max_connections: int = Field(
        512, ge=1, description="Open HTTP connections per HTTP process; beyond it a new connection gets 503 and is closed."
    )
    # Security, named as in Qdrant's config/config.yaml (docs/security.md).
    api_key: SecretStr | None = Field(
        None, description="Key every request must carry (header `api-key: KEY` or `Authorization: Bearer KEY`), "
        "except the health checks (/, /healthz, /livez, /readyz); without it 401. Unset or empty: no authentication. "
        "Also the key JWTs are signed with (jwt_rbac).",
    )
    read_only_api_key: SecretStr | None = Field(
        None, description="A second key that allows reads only (a write with it answers 403).",
    )
    jwt_rbac: bool = Field(
        False, description="Also accept JSON Web Tokens signed (HS256) with api_key, carrying Qdrant's claims: "
        "`exp`, and `access` (\"r\" or \"m\" for every collection, or a list of {collection, access: r|rw}).",
    )
    enable_tls: bool = Field(
        False, description="Serve the REST API over HTTPS with tls.cert and tls.key; also encrypts the shards' "
        "connections across machines.",
    )
    verify_https_client_certificate: bool = Field(
        False, description="With enable_tls: accept only clients presenting a certificate signed by tls.ca_cert.",
    )

    @model_validator(mode="after")
    def _jwt_needs_a_key(self) -> "ServiceSettings":
        # Qdrant's tokens are signed with the API key (src/common/auth/mod.rs get_jwt_parser).
        if self.jwt_rbac and not (self.api_key and self.api_key.get_secret_value()):
            raise ValueError("service.jwt_rbac needs service.api_key: the tokens are signed with it")
        return self


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    cert: Path | None = Field(None, description="With service.enable_tls: the server's certificate chain (PEM).")
    key: Path | None = Field(None, description="With service.enable_tls: the server's private key (PEM).")
    ca_cert: Path | None = Field(
        None, description="Certificate authority (PEM) that client certificates must be signed by "
        "(service.verify_https_client_certificate).",
    )


class CollectionDefaults(BaseModel):
    """Defaults of a new collection, for what its create request leaves out
    (Qdrant's ``storage.collection`` section of config.yaml, same names)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    replication_factor: int = Field(
        1, ge=1, description="Replicas of each shard of a new collection whose create request gives none "
        "(Qdrant's default, 1); on one Ray node a collection has one copy whatever it says.",
    )
    write_consistency_factor: int = Field(
        1, ge=1, description="Replicas that must have a write before it is acknowledged, for a new collection "
        "whose create request gives none (Qdrant's default, 1).",
    )


class StorageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    storage_path: Path = Field(Path("./shoal_storage"), description="Folder holding every collection, its log and snapshots, and the metadata.")
    wal_capacity_mb: int = Field(32, description="Log size per shard after which the shard snapshots itself and trims its log.")
    indexing_threads: int = Field(0, description="Threads each shard uses to build its HNSW graphs; 0 = all cores.")
    indexing_niceness: int = Field(
        10, ge=0, le=19, description="Added to the nice value of each shard's graph building (Linux), so that on a "
        "busy machine searches and writes get the CPU first and the graphs catch up when it is free; 0 = same priority.",
    )
    snapshots_path: Path | None = Field(
        None, description="Folder of the collection and shard snapshots (and of the files `recover` may read); "
        "unset = `snapshots` inside storage_path."
    )
    search_threads: int = Field(
        1, ge=1, description="Threads each shard uses to score one batch of searches (graph and matrix products); 1 leaves the other cores to the HTTP processes and the other shards."
    )
    collection: CollectionDefaults = Field(
        default_factory=CollectionDefaults, description="Defaults of new collections (Qdrant's storage.collection)."
    )


class ClusterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    ray_address: str | None = Field(
        None, description="Ray cluster to join (also taken from RAY_ADDRESS). Unset: start a private Ray instance "
        "on 127.0.0.1 (never one found running on the machine).",
    )
    ray_connect_timeout_s: float = Field(
        30.0, gt=0, description="With ray_address: seconds to wait at start for the Ray head to answer; then the "
        "server exits, saying so.",
    )
    node_ip_address: str | None = Field(
        None, description="With ray_address: the address of this machine's Ray node, which the gateway attaches "
        "to. Unset: Ray finds it (needed only where several Ray nodes share one machine).",
    )
    num_cpus: int | None = Field(None, description="CPUs a locally started Ray may use; unset = all.")
    shard_node_resource: str | None = Field(
        None, description="On a Ray cluster: a custom Ray resource (e.g. `shoal_storage`) that marks the nodes "
        "which host shard replicas, each started with `ray start --resources '{\"<name>\": 1}'`; every shard asks "
        "for a sliver of it, so Ray keeps shards there. Unset: every alive node with CPUs hosts shards. (A node "
        "that also advertises `shoal-node:<name>` is known to placement by that name: started again under it, "
        "with its folder, it keeps its replicas.)",
    )
    ray_down_grace_s: float = Field(
        10.0, gt=0, description="Without ray_address (the embedded Ray instance): seconds Ray may stay unavailable "
        "(a head process died, or it stopped answering); meanwhile requests answer 503, then the server exits with "
        "a non-zero status.",
    )
    head_down_grace_s: float = Field(
        600.0, gt=0, description="With ray_address (a joined cluster): seconds Ray's head (its GCS) may stay "
        "unreachable; meanwhile requests the shards can answer are served (creating, deleting or recovering a "
        "collection answers 503), then the server exits with a non-zero status. The gateway's own Ray driver is "
        "given RAY_gcs_rpc_server_reconnect_timeout_s = this + 30 (unless set in its environment), so that Ray "
        "does not end it first. 600 = what KubeRay gives worker nodes with GCS fault tolerance.",
    )
    shard_ping_timeout_s: float = Field(
        2.0, gt=0, description="Seconds a shard (and Ray) has to answer a health check, made every second; "
        "a shard that does not is unavailable: its collection answers 503 until it answers again.",
    )
    shard_restart_after_s: float = Field(
        30.0, gt=0, description="Seconds a shard may stay silent before Ray restarts it (it reloads its storage); "
        "long enough for a snapshot or a graph save that holds the shard for a second or two.",
    )
    shard_call_timeout_s: float = Field(
        60.0, gt=0, description="Seconds any call from the gateway to a shard may take (a read's `timeout` "
        "parameter may shorten it); then the request answers 408.",
    )
    node_grace_s: float = Field(
        30.0, gt=0, description="On a Ray cluster: seconds a Ray node may be missing (or a replica down) before its "
        "replicas are rebuilt on other nodes.",
    )
    raft_host: str = Field("127.0.0.1", description="Address this node's metadata Raft listens on.")
    raft_port: int | None = Field(
        None, description="Port of this node's metadata Raft; unset = the HTTP port + 2 (6335, Qdrant's p2p port)."
    )
    raft_peers: list[str] = Field(default_factory=list, description="Other metadata Raft nodes as host:port; empty = a single-node cluster.")
    secret: SecretStr | None = Field(
        None, description="Shared secret of a cluster of gateways: authenticates their Raft traffic (and, on a "
        "cluster, their connections to shards on other nodes). Required with raft_peers. Prefer the environment "
        "(SHOAL__CLUSTER__SECRET) to a flag or a file: a flag shows in the process list.",
    )

    @model_validator(mode="after")
    def _peers_need_a_secret(self) -> "ClusterSettings":
        if self.raft_peers and not (self.secret and self.secret.get_secret_value()):
            raise ValueError("cluster.secret is required when cluster.raft_peers is set")
        if self.raft_peers and not self.ray_address:
            raise ValueError("cluster.raft_peers needs cluster.ray_address (--ray-address or RAY_ADDRESS): the "
                             "gateways of one cluster share its Ray cluster, where the shards run")
        return self


class LimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    max_shard_number: int = Field(
        64, ge=1, description="Largest shard_number of one collection (each shard is a process of its own)."
    )
    max_shards_total: int = Field(
        128, ge=1, description="Shards this server hosts at most, all collections together; a create beyond it is refused."
    )
    snapshot_timeout_s: float = Field(
        3600.0, gt=0, description="Seconds a shard may take to export its part of a snapshot, or to restore a shard snapshot."
    )
    max_snapshot_upload_mb: int = Field(
        16384, ge=1, description="Largest snapshot file accepted by an upload, in MiB."
    )
    shard_start_timeout_s: float = Field(
        300.0, gt=0, description="Seconds a collection's shards may take to start (at create, or loading at start-up); "
        "beyond it a create is undone and a loading collection is reported unavailable.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL__", env_nested_delimiter="__", extra="forbid")

    service: ServiceSettings = ServiceSettings()
    storage: StorageSettings = StorageSettings()
    cluster: ClusterSettings = ClusterSettings()
    limits: LimitSettings = LimitSettings()
    tls: TlsSettings = TlsSettings()
    log_level: str = Field("INFO", description="Python logging level of the server.")

    @model_validator(mode="after")
    def _one_http_process_on_a_cluster(self) -> "Settings":
        # HTTP workers reach shards through their Unix sockets on this machine; a
        # replicated collection's shards are replica sets spread over the cluster.
        if self.cluster.ray_address and self.service.workers != 1:
            raise ValueError("service.workers must be 1 with cluster.ray_address (HTTP workers serve shards on "
                             "one machine): on a cluster, run more gateways instead")
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> "Settings":
        if self.service.enable_tls:
            missing = [name for name in ("cert", "key") if getattr(self.tls, name) is None]
            if missing:
                raise ValueError("service.enable_tls needs " + " and ".join(f"tls.{m}" for m in missing))
        if self.service.verify_https_client_certificate and not (self.service.enable_tls and self.tls.ca_cert):
            raise ValueError("service.verify_https_client_certificate needs service.enable_tls and tls.ca_cert")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """Values from the YAML file named by ``load(config_file=...)``."""

    data: dict[str, Any] = {}

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class ConfigError(ValueError):
    """Settings that cannot be used, in one line that says what to change."""


def load(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from flags (``overrides``, nested dicts), env, and the YAML file.
    pydantic-settings deep-merges the sources, so a flag replaces one leaf only.
    ConfigError, one line, for a file that cannot be read or parsed and for any
    setting that is not valid."""
    _YamlSource.data = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"configuration file {config_file}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"configuration file {config_file} is not valid YAML{where}: {what}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {config_file}: the configuration must be a mapping")
        _YamlSource.data = loaded
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            text = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {text}" if where else text)
        source = f" (file {config_file}, flags or SHOAL__ variables)" if config_file else ""
        raise ConfigError(f"invalid settings{source}: " + "; ".join(problems)) from None
    finally:
        _YamlSource.data = {}
