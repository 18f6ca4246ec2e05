"""``shoal ingest``'s flags and entry point (``gateway.cli`` adds the subcommand),
and the server's half: publishing how to join its private Ray. Light to import:
Ray and pyarrow load only when a load runs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("ingest", help="bulk-load points from Parquet, JSON Lines or .npy files",
                            description="Load points into an existing collection, written by Ray tasks straight "
                                        "to its shards; a rerun skips the parts an earlier run finished.")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help=".parquet, .jsonl or .npy files "
                        "(a .npy file with a .jsonl of ids and payloads beside it)")
    parser.add_argument("--collection", required=True, help="the collection to load into (it must exist)")
    parser.add_argument("--url", default="http://localhost:6333", help="the Shoal server (default %(default)s)")
    parser.add_argument("--api-key", help="the server's API key, if it has one")
    parser.add_argument("--storage", type=Path, default=Path("./shoal_storage"),
                        help="storage folder of a `shoal serve` on this machine with its own Ray, used to join "
                             "that Ray when RAY_ADDRESS is not set (default %(default)s)")
    parser.add_argument("--max-rejects", type=int, default=0,
                        help="rejected rows allowed before the exit status is 1 (default 0)")
    parser.add_argument("--rejects", type=Path, help="file of rejected rows (default ./ingest-COLLECTION.rejects.jsonl)")
    parser.add_argument("--state-dir", type=Path,
                        help="folder of the progress file (default .shoal-ingest beside the rejects file)")
    parser.add_argument("--id-column", default="id", help="field of the point id (default id)")
    parser.add_argument("--hash-ids", action="store_true",
                        help="make ids a UUIDv5 of the id field's value, for ids that are neither unsigned "
                             "integers nor UUIDs")
    parser.add_argument("--vector-column", default="vector", help="field of the vector (default vector)")
    parser.add_argument("--payload-columns", help="fields making the payload, comma-separated (default: the "
                        "`payload` field, else every field but the id and the vector)")
    parser.add_argument("--part-rows", type=int, default=5000,
                        help="rows per part, the unit of progress and of resuming (default %(default)s)")
    parser.add_argument("--parallelism", type=int, default=4, help="parts written at once (default %(default)s)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the load; its exit status. Bad input (a missing source, an unknown
    collection, no Ray to join) ends it with one line and status 2."""
    if args.part_rows < 1 or args.parallelism < 1 or args.max_rejects < 0:
        return _fail("--part-rows and --parallelism must be at least 1, --max-rejects at least 0")
    from cluster.ingest.job import IngestError, Options, run
    from cluster.ingest.layout import LayoutError
    from cluster.ingest.sources import Columns, SourceError
    from cluster.runtime import RayUnreachable

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    payload = None if args.payload_columns is None else tuple(c.strip() for c in args.payload_columns.split(",")
                                                              if c.strip())
    options = Options(collection=args.collection, sources=tuple(args.sources), url=args.url, api_key=args.api_key,
                      storage=args.storage, rejects=args.rejects, state_dir=args.state_dir,
                      max_rejects=args.max_rejects, part_rows=args.part_rows, parallelism=args.parallelism,
                      columns=Columns(args.id_column, args.vector_column, payload, args.hash_ids))
    try:
        return run(options)
    except (SourceError, LayoutError, IngestError, RayUnreachable) as exc:
        return _fail(str(exc))


def _fail(text: str) -> int:
    sys.stderr.write(f"shoal ingest: error: {text}\n")
    return EXIT_BAD_INPUT


def publish_ray(storage: Path) -> None:
    """Write how to join this server's private Ray into ``storage`` (nothing on a
    joined cluster: programs join that the usual way)."""
    from cluster import runtime
    from cluster.ingest import access

    found = runtime.private_access()
    if found is not None:
        access.publish(storage, *found)


def withdraw_ray(storage: Path) -> None:
    from cluster.ingest import access

    access.withdraw(storage)
