"""The README's tutorial snippet runs as written against a Shoal server, with no
deprecated call (a deprecation warning fails the test) and the answer its
comment shows."""

from __future__ import annotations

import contextlib
import io
import re
import uuid
import warnings

from tests.conftest import REPO_ROOT


def _snippet() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Qdrant's tutorial, against Shoal", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_runs_unchanged(base_url, shoal_server):
    code = _snippet()
    name = f"readme_{uuid.uuid4().hex[:8]}"
    assert "port=6333" in code and '"first_collection"' in code
    code = code.replace("port=6333", f"port={shoal_server.port}").replace('"first_collection"', f'"{name}"')
    printed = io.StringIO()
    scope: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            with contextlib.redirect_stdout(printed):
                exec(compile(code, "README.md", "exec"), scope)
        hits = scope["hits"]
        assert [(h.id, round(h.score, 3), h.payload) for h in hits] == [(2, 0.871, {"city": "London"})]
        assert "id=2" in printed.getvalue()
    finally:
        if "client" in scope:
            scope["client"].delete_collection(name)
            scope["client"].close()
