"""``shoal``: the command line.

    shoal serve [--host 0.0.0.0] [--port 6333] [--storage ./shoal_storage] [--config FILE]
    shoal ingest --collection NAME [--max-rejects N] SOURCE...   (docs/ingest.md)
    shoal --version

Settings are read here, once, and passed down (see ``gateway.settings``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import colorama
from aiohttp import web

from cluster.ingest import command as ingest_command
from gateway import serve as serve_app
from gateway import settings as settings_module


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description="Shoal: Qdrant's REST API over Ray-hosted shards.")
    parser.add_argument("--version", action="version", version=_version())
    # The metavar lists the commands for users; _worker (no help) stays out of it.
    sub = parser.add_subparsers(dest="command", required=True, metavar="{serve,ingest}")
    serve = sub.add_parser("serve", help="start the server")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="REST port (default 6333)")
    serve.add_argument("--storage", type=Path, help="storage folder (default ./shoal_storage)")
    serve.add_argument("--config", type=Path, help="YAML settings file")
    serve.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a private local Ray)")
    serve.add_argument("--raft-host", help="address of this gateway's metadata Raft (default 127.0.0.1)")
    serve.add_argument("--raft-port", type=int, help="port of this gateway's metadata Raft (default: REST port + 2)")
    serve.add_argument("--peers", help="the other gateways' Raft addresses, HOST:PORT,... (default: none)")
    serve.add_argument("--cluster-secret", help="shared secret of the gateways, required with --peers "
                       "(prefer SHOAL__CLUSTER__SECRET: a flag shows in the process list)")
    ingest_command.add_parser(sub)
    # An HTTP worker, started by the control process (see gateway.workers).
    worker = sub.add_parser("_worker")
    worker.add_argument("--control-dir", type=Path, required=True)
    for action in serve._actions[1:]:
        worker._add_action(action)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from gateway.routes.service import QDRANT_VERSION

    try:
        shoal = version("shoal")
    except PackageNotFoundError:
        shoal = "dev"
    return f"shoal {shoal} (Qdrant REST API {QDRANT_VERSION})"


def _overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    if args.host is not None:
        out.setdefault("service", {})["host"] = args.host
    if args.port is not None:
        out.setdefault("service", {})["http_port"] = args.port
    if args.storage is not None:
        out.setdefault("storage", {})["storage_path"] = args.storage
    cluster = {
        "ray_address": args.ray_address,
        "raft_host": args.raft_host,
        "raft_port": args.raft_port,
        "raft_peers": [p.strip() for p in args.peers.split(",") if p.strip()] if args.peers is not None else None,
        "secret": args.cluster_secret,
    }
    for key, value in cluster.items():
        if value is not None:
            out.setdefault("cluster", {})[key] = value
    # Ray's own variable names the cluster to join, as every Ray program honours it.
    if os.environ.get("RAY_ADDRESS") and not os.environ.get("SHOAL__CLUSTER__RAY_ADDRESS"):
        out.setdefault("cluster", {}).setdefault("ray_address", os.environ["RAY_ADDRESS"])
    return out


def _settings(args: argparse.Namespace):
    settings = settings_module.load(args.config, _overrides(args))
    # A server's log goes to files and journals: strip terminal colours from
    # everything written to it, the shards' lines that Ray forwards included
    # (Ray writes colour codes into its own error texts, whatever its settings).
    colorama.init(strip=True, convert=False)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    serve_app.quiet_malformed_http()
    return settings


def _bound_shard_calls(settings) -> None:
    """Every call to a shard from this process is bounded by the setting (see
    ``cluster.shard_client``)."""
    from cluster.shard_client import ShardClient

    ShardClient.call_timeout = settings.cluster.shard_call_timeout_s


def _tls(settings):
    """The REST API's TLS context, or None; read before anything starts, so that
    an unusable certificate ends the command with one line (ConfigError)."""
    if not settings.service.enable_tls:
        return None
    return serve_app.tls_context(settings.tls.cert, settings.tls.key, settings.tls.ca_cert,
                                 settings.service.verify_https_client_certificate)


def _same_cluster_secret(settings, runtime) -> None:
    """On a Ray cluster, the first gateway with a secret leaves a verifier of it
    in Ray's store (``cluster.keys``); a gateway with another secret stops here,
    in one line, instead of running leaderless beside the others."""
    from cluster import keys

    if not (settings.cluster.ray_address and settings.cluster.secret and settings.cluster.secret.get_secret_value()):
        return
    secret = settings.cluster.secret.get_secret_value()
    if not keys.verifies(secret, runtime.kv_claim(keys.VERIFIER_KEY, keys.secret_verifier(secret))):
        raise settings_module.ConfigError(
            "cluster.secret differs from the secret of the gateways already on this Ray cluster (set by the first "
            "gateway that joined it): give every gateway the same secret (SHOAL__CLUSTER__SECRET or --cluster-secret)")


def _run(app: web.Application, settings, *, tls=None, path: str | None = None, reuse_port: bool = False) -> None:
    serve_app.run(
        app,
        host=settings.service.host,
        port=settings.service.http_port,
        max_connections=settings.service.max_connections,
        reuse_port=reuse_port,
        unix_path=path,
        shutdown_timeout=10,
        ssl_context=tls,
    )


def serve(args: argparse.Namespace, argv: list[str]) -> None:
    from gateway import control as control_module
    from gateway.app import create_app
    from gateway.state import CONTROL, HEALTH, WORKER_ARGV
    from gateway.workers import REGISTRY_PATH, Control, worker_count

    from cluster import runtime

    settings = _settings(args)
    tls = _tls(settings)
    _bound_shard_calls(settings)
    # Ray first, in the main thread: its core installs a SIGTERM handler of its
    # own, and aiohttp's (installed by run_app below) must be the one that stays,
    # or SIGTERM aborts the process instead of shutting it down cleanly.
    runtime.start(settings.cluster.ray_address, settings.cluster.num_cpus, settings.cluster.node_ip_address,
                  head_down_grace=settings.cluster.head_down_grace_s,
                  connect_timeout=settings.cluster.ray_connect_timeout_s)
    ingest_command.publish_ray(settings.storage.storage_path)  # how `shoal ingest` joins a private Ray
    _same_cluster_secret(settings, runtime)
    app = create_app(settings, control_module.control_ctx)
    sites: dict = {}
    if worker_count(settings.service.workers) > 1:
        control = Control()
        app[CONTROL] = control
        app[WORKER_ARGV] = argv
        app.router.add_get(REGISTRY_PATH, control_module.registry)
        sites = {"path": control.socket_path, "reuse_port": True}
    logging.getLogger("shoal").info(
        "Shoal listening on %s:%d, storage %s, %d HTTP process(es)",
        settings.service.host,
        settings.service.http_port,
        settings.storage.storage_path,
        worker_count(settings.service.workers),
    )
    _run(app, settings, tls=tls, **sites)
    ingest_command.withdraw_ray(settings.storage.storage_path)
    health = app.get(HEALTH)
    if health is not None and (health.exit_reason is not None or health.ray_problem is not None):
        # Ray died (cluster.health): exit non-zero, and skip Ray's own exit
        # handler, a ray.shutdown() that would wait a minute on the dead parts.
        logging.shutdown()
        os._exit(1)


def worker(args: argparse.Namespace) -> None:
    from gateway.app import create_app
    from gateway.scrape import WORKER_METRICS_PATH, worker_metrics, worker_socket
    from gateway.state import CONTROL_DIR
    from gateway.workers import worker_ctx

    settings = _settings(args)
    _bound_shard_calls(settings)
    app = create_app(settings, worker_ctx)
    app[CONTROL_DIR] = args.control_dir
    # The control process reads this worker's request figures on its own socket (gateway.scrape).
    app.router.add_get(WORKER_METRICS_PATH, worker_metrics)
    _run(app, settings, tls=_tls(settings), reuse_port=True, path=worker_socket(args.control_dir, os.getpid()))


def main(argv: list[str] | None = None) -> None:
    """The ``shoal`` command. A setting that cannot be used, or a Ray cluster that
    does not answer, ends it with one line saying what to change (exit status 2),
    never a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    from cluster.runtime import RayUnreachable  # after --help and --version: Ray takes a second to import

    try:
        if args.command == "serve":
            serve(args, argv[1:])
        elif args.command == "_worker":
            worker(args)
        elif args.command == "ingest":
            sys.exit(ingest_command.main(args))
    except (settings_module.ConfigError, RayUnreachable) as exc:
        parser.exit(2, f"shoal: error: {exc}\n")


if __name__ == "__main__":
    main()
