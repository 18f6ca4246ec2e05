"""The marks every module of tests/latest carries: it runs only under the newest
qdrant-client, which scripts/test puts first on PYTHONPATH for this directory."""

from __future__ import annotations

import importlib.metadata

import pytest

CLIENT_VERSION = importlib.metadata.version("qdrant-client")
_MAJOR_MINOR = tuple(int(x) for x in CLIENT_VERSION.split(".")[:2])

LATEST_ONLY = [
    pytest.mark.latest_client,
    pytest.mark.skipif(_MAJOR_MINOR <= (1, 15), reason=(
        f"needs the newest qdrant-client; {CLIENT_VERSION} is installed "
        "(scripts/test runs this directory with it on PYTHONPATH)")),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning"),
]
