"""Shoal's benchmark: Shoal over REST beside Qdrant Edge in-process and raw hnswlib.

Run ``python -m bench.run --help``; ``bench/README.md`` says what each figure means.
The package is not installed with Shoal (pyproject's packages are gateway, cluster and
shard); it runs from the repository root.
"""
