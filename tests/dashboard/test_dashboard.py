"""The dashboard in headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package; ``scripts/test`` installs both), used as a person
would: open ``/dashboard``, read the tables, watch the charts, type a point id
and press Enter. What the page shows is checked against the REST API's answers,
and the neighbours against ``QdrantClient(":memory:")``."""

from __future__ import annotations

import json
import random
import shutil
import urllib.request
import uuid

import pytest

from tests.api.rawhttp import call
from tests.conftest import ShoalServer

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = '<img src=x onerror="window.__pwned=1;alert(1)"><script>window.__pwned=2</script>'
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        # A persistent context is how Playwright gives Chromium a fresh --user-data-dir of ours.
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1000})
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.dialogs = []  # every alert() the page opened
    page.errors = []  # every script error

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    page.close()


def vectors(n: int, seed: int) -> list[list[float]]:
    """Random vectors; the fourth (the one whose payload tries to inject HTML) right
    beside the third, so that it is the third's nearest neighbour."""
    rng = random.Random(seed)
    out = [[rng.uniform(-1, 1) for _ in range(4)] for _ in range(n)]
    out[3] = [x + 0.001 for x in out[2]]
    return out


@pytest.fixture
def data(shoal, memory, collection_names):
    """Two collections, the same points in Shoal and in the :memory: oracle: one of
    3 shards with integer ids (one payload tries to inject HTML), one with UUIDs."""
    from qdrant_client import models

    made = {}
    for shards, ids, name in ((3, list(range(1, 41)), collection_names("dash")),
                              (1, [str(uuid.UUID(int=i + 1)) for i in range(25)], collection_names("dash_uuid"))):
        for client in (shoal, memory):
            client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE),
                                     shard_number=shards)
            points = [models.PointStruct(id=i, vector=v, payload={"n": k, "label": XSS if k == 3 else f"p{k}"})
                      for k, (i, v) in enumerate(zip(ids, vectors(len(ids), seed=shards)))]
            client.upsert(name, points=points, wait=True)
        made[name] = ids
    return made


def rows(page, selector: str) -> list[dict[str, str]]:
    """Each row of a table as {cell class: text}."""
    return page.eval_on_selector_all(
        selector, "trs => trs.map(tr => Object.fromEntries([...tr.cells].map((td, i) => "
                  "[td.className.split(' ')[0] || String(i), td.textContent])))")


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_dashboard_shows_what_the_api_says(page, base_url, data, tmp_path, memory):
    page.goto(base_url + "/dashboard")
    for name in data:
        page.wait_for_selector(f'#collections tr[data-collection="{name}"]', timeout=WAIT_MS)

    # Collections: points, shards, replicas and their states, as the API gives them.
    shown = {r["name"]: r for r in rows(page, "#collections tbody tr")}
    for name in data:
        info = call("GET", f"{base_url}/collections/{name}")[1]["result"]
        cluster = call("GET", f"{base_url}/collections/{name}/cluster")[1]["result"]
        row = shown[name]
        assert number(row["points"]) == info["points_count"] == len(data[name])
        assert number(row["shards"]) == info["config"]["params"]["shard_number"]
        assert number(row["replicas"]) == len(cluster["local_shards"]) + len(cluster["remote_shards"])
        assert row["states"] == f"Active {len(cluster['local_shards'])}"
        replicas = rows(page, f'#shards tr[data-collection="{name}"]')
        assert [(number(r["shard"]), r["peer"], r["state"], number(r["points"])) for r in replicas] == [
            (s["shard_id"], str(cluster["peer_id"]), s["state"], s["points_count"]) for s in cluster["local_shards"]]

    # The cluster: this gateway, its role and the leader, as GET /cluster says.
    status = call("GET", f"{base_url}/cluster")[1]["result"]
    assert page.text_content("#peer-id") == str(status["peer_id"])
    assert page.text_content("#leader") == str(status["raft_info"]["leader"])
    assert page.text_content("#role") == status["raft_info"]["role"]
    assert page.text_content("#term") == str(status["raft_info"]["term"])
    peers = rows(page, "#peers tbody tr")
    assert {r["peer"] for r in peers} == set(status["peers"])
    assert [r["peer-role"] for r in peers if r["peer"] == str(status["raft_info"]["leader"])] == [
        "leader (this gateway)"]

    # Search by point id, Enter in the box: the neighbours in the oracle's order, with its payloads.
    int_name, uuid_name = list(data)
    for name, point, submit in ((int_name, 3, "enter"), (uuid_name, data[uuid_name][7], "click")):
        page.select_option("#search-collection", name)
        page.fill("#search-id", str(point))
        if submit == "enter":
            page.press("#search-id", "Enter")
        else:
            page.click("#search-button")
        page.wait_for_function("want => document.querySelector('#search-status').textContent.startsWith(want)",
                               arg=f"10 neighbours of {point}", timeout=WAIT_MS)
        expected = memory.query_points(name, query=point, limit=10, with_payload=True).points
        got = rows(page, "#results tbody tr")
        assert [r["id"] for r in got] == [str(p.id) for p in expected]
        assert [json.loads(r["payload"]) for r in got] == [p.payload for p in expected]
        assert [float(r["score"]) for r in got] == pytest.approx([p.score for p in expected], abs=1e-5)

    # The payload that tries to inject HTML is shown as text, and nothing of it ran.
    page.fill("#search-id", str(data[int_name][2]))  # the XSS point is its nearest neighbour
    page.select_option("#search-collection", int_name)
    page.press("#search-id", "Enter")
    page.wait_for_function("() => document.querySelector('#results td.payload') && "
                           "document.querySelector('#results td.payload').textContent.includes('onerror')",
                           timeout=WAIT_MS)
    texts = [json.loads(r["payload"])["label"] for r in rows(page, "#results tbody tr")]
    assert XSS in texts
    assert page.eval_on_selector_all("#results img, #results script, main img", "els => els.length") == 0
    assert page.evaluate("() => window.__pwned === undefined")
    assert page.dialogs == [] and page.errors == []

    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)


def test_charts_show_the_request_rate(page, base_url, data):
    name = next(iter(data))
    page.goto(base_url + "/dashboard")
    page.wait_for_selector("#collections tbody tr", timeout=WAIT_MS)
    for _ in range(40):
        assert call("POST", f"{base_url}/collections/{name}/points/query", {"query": 1, "limit": 3})[0] == 200
    # The history is sampled every few seconds and the page reads it every 5 s.
    page.wait_for_function("() => parseFloat(document.querySelector('#rate-now').textContent) > 0", timeout=40_000)
    assert float(page.text_content("#rate-now")) > 0
    assert float(page.get_attribute("#rate-chart", "data-max")) > 0
    assert page.eval_on_selector_all("#rate-chart polyline, #rate-chart circle", "els => els.length") > 0
    assert float(page.text_content("#mean-now")) > 0
    assert page.errors == []


def test_the_api_key_goes_with_every_request(page, base_url):
    """The key typed into the page is kept for the tab and sent as ``api-key``."""
    page.goto(base_url + "/dashboard")
    page.wait_for_selector("#updated:not(:empty)", timeout=WAIT_MS)
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("api-key"))))
    page.fill("#api-key", "k-123")
    page.click("#key-save")
    page.wait_for_timeout(1500)
    api_calls = [(url, key) for url, key in sent if "/dashboard" not in url]
    assert {u.split(base_url)[1].split("?")[0] for u, _ in api_calls} >= {"/cluster", "/collections", "/metrics/history"}
    assert {key for _, key in api_calls} == {"k-123"}
    page.reload()
    assert page.input_value("#api-key") == "k-123"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """A server with API keys set: the page's files stay open, the API does not."""
    base = tmp_path_factory.mktemp("keyed")
    server = ShoalServer(base / "storage", base, env={"SHOAL__SERVICE__API_KEY": "rw-key-0123456789",
                                                     "SHOAL__SERVICE__READ_ONLY_API_KEY": "ro-key-0123456789"})
    server.start()
    yield server
    server.stop()


def test_with_api_keys_the_page_asks_for_one(page, keyed_server):
    url = keyed_server.url
    headers = {"api-key": "rw-key-0123456789", "Content-Type": "application/json"}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    body = json.dumps({"vectors": {"size": 2, "distance": "Dot"}}).encode()
    opener.open(urllib.request.Request(url + "/collections/keyed", data=body, method="PUT", headers=headers)).read()

    page.goto(url + "/dashboard")  # no key needed for the page itself
    page.wait_for_selector("#problem:not([hidden])", timeout=WAIT_MS)
    assert "401" in page.text_content("#problem") and "API key" in page.text_content("#problem")
    assert rows(page, "#collections tbody tr") == []
    page.fill("#api-key", "ro-key-0123456789")  # a read-only key shows everything
    page.press("#api-key", "Enter")
    page.wait_for_selector('#collections tr[data-collection="keyed"]', timeout=WAIT_MS)
    page.wait_for_selector("#problem[hidden]", state="attached", timeout=WAIT_MS)
    assert page.text_content("#leader") != "–"
    assert page.errors == []
