"""``shoal ingest``: bulk loads from Parquet, JSON Lines and ``.npy`` files, read
with Ray Data and written by Ray tasks straight to the shards' primaries
(docs/ingest.md).

- ``sources``: which files, of which kind, how many rows, and the parts they split into;
- ``rows``: a part's rows checked as the REST path checks them, and the upsert ops;
- ``writer``: the Ray task that writes one part;
- ``layout``: what the driver asks the server (the collection's shards and config);
- ``access``: how a Ray program joins a ``shoal serve``'s private Ray instance;
- ``state``: finished parts and rejected rows, on disk;
- ``job``: the driver.
"""
