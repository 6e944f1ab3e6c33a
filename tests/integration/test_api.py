"""The tenant-scoped HTTP API on a real uvicorn server, over a real lake and OpenSearch replica."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyiceberg.catalog import Catalog

from tests.browser import require_chromium
from tests.integration.api_server import serving
from tests.unit.lake.conftest import append_explanations, explanation_row
from whylake.api.app import ApiConfig
from whylake.api.keys import ApiKeys, key_digest
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, ensure_tables, open_catalog
from whylake.lake.opensearch import OpenSearchConfig, index_records
from whylake.lake.reviews import ReviewRequest, add_review
from whylake.schemas.secrets import Secret
from whylake.views.letter import LetterConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
OPENSEARCH = f"http://127.0.0.1:{os.environ.get('WHYLAKE_OPENSEARCH_PORT', '9200')}"
ACME, GLOBEX, ACME_T2 = "key-acme-0123456789", "key-globex-0123456789", "key-acme-tier2-0123"
KEYS = ApiKeys.parse(
    {
        "keys": {
            key_digest(ACME): "acme",
            key_digest(GLOBEX): "globex",
            key_digest(ACME_T2): {"tenant": "acme", "max_tier": 2},
        }
    }
)
# Recent event times: the replica's freshness check counts documents inside its 30-day window.
RECENT = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


@dataclass
class Api:
    base: str
    home: Path
    catalog: Catalog
    replica: OpenSearchConfig
    between: datetime  # after r-1's first explanation, before its second

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.base + path, headers=headers, params=params, timeout=60)

    def wait(self, predicate: Any, what: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            health = httpx.get(self.base + "/healthz", timeout=10).json()
            if predicate(health):
                return health
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {health}")


def _row(tenant: str, request: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("event_ts", RECENT)
    kw.setdefault("explained_at", RECENT + timedelta(hours=1))
    return explanation_row(tenant, request, template_version="v2", **kw)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home: Path = tmp_path_factory.mktemp("api-home")
    catalog_config = CatalogConfig.embedded(home)
    catalog = open_catalog(catalog_config)
    ensure_tables(catalog)
    replica = OpenSearchConfig(url=OPENSEARCH, index_prefix=f"test-api-{uuid.uuid4().hex[:8]}")
    client = replica.client()
    if not client.ping():
        pytest.fail(f"no OpenSearch at {OPENSEARCH}: start it with `make up` (infra/services.sh)")
    first = [_row("acme", "r-1"), _row("acme", "r-2"), _row("globex", "g-1")]
    first_id = append_explanations(catalog, first, "b-1")
    first_ms = catalog.load_table(EXPLANATIONS).snapshot_by_id(first_id).timestamp_ms
    # A whole second between the commits: the auditor page sends as-of times in seconds.
    between = datetime.fromtimestamp(math.ceil((first_ms + 1) / 1000), UTC)
    while datetime.now(UTC) < between + timedelta(milliseconds=300):
        time.sleep(0.01)
    second = [
        _row(
            "acme",
            "r-1",
            model_version="2.0.0",
            explained_at=RECENT + timedelta(hours=5),
            run_id="run-2",
        )
    ]
    append_explanations(catalog, second, "b-2")
    index_records(client, replica, first + second)
    client.indices.refresh(index=f"{replica.index_prefix}-*")
    add_review(
        catalog,
        ReviewRequest("acme", "r-1", "ada", "escalate", "check the debt ratio"),
        Secret("api-test-key", "tests"),
    )
    config = ApiConfig(
        catalog=catalog_config,
        keys=KEYS,
        opensearch=replica,
        letter=LetterConfig(chromium=require_chromium()),
        poll_s=0.1,
        ping_s=1.0,
    )
    try:
        with serving(config) as base:
            yield Api(base, home, catalog, replica, between)
    finally:
        client.indices.delete(index=f"{replica.index_prefix}-*", ignore_unavailable=True)
        client.close()


def _foreign_and_missing(api: Api, path: str, own: str, foreign: str) -> None:
    """No key: 401. A foreign key: 404, byte for byte what a missing record gets."""
    for key in (None, "not-a-key"):
        response = api.get(path, key)
        assert response.status_code == 401, (path, key, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    hidden = api.get(path, foreign)
    assert hidden.status_code == 404, (path, hidden.text)
    assert api.get(path, own).status_code == 200, path
    missing = api.get(path.replace("/r-1", "/no-such-request"), own)
    if "/r-1" in path:
        assert (missing.status_code, missing.content) == (hidden.status_code, hidden.content)
    assert hidden.json() == {"detail": "no such explanation"}


def test_every_endpoint_refuses_no_key_and_hides_records_from_another_tenant(api: Api) -> None:
    for path in (
        "/v1/tenants/acme/explanations/r-1",
        "/v1/tenants/acme/explanations/r-1/letter?format=html",
        "/v1/tenants/acme/reviews",
    ):
        _foreign_and_missing(api, path, ACME, GLOBEX)
    # globex's key reads globex's record, never acme's by another path.
    assert api.get("/v1/tenants/globex/explanations/g-1", GLOBEX).json()["tenant_id"] == "globex"
    assert api.get("/v1/tenants/globex/explanations/g-1", ACME).status_code == 404
    assert api.get("/v1/tenants/acme/explanations/g-1", ACME).status_code == 404
    assert api.get("/v1/tenants/..%2Fglobex/explanations/g-1", GLOBEX).status_code == 404
    # The stream: 401 without a key, 404 for another tenant's, before any event is sent.
    assert api.get("/v1/tenants/acme/explanations/stream").status_code == 401
    assert api.get("/v1/tenants/acme/explanations/stream", GLOBEX).status_code == 404


def test_each_tier_and_time_travel(api: Api) -> None:
    views = {
        t: api.get("/v1/tenants/acme/explanations/r-1", ACME, tier=t).json() for t in (1, 2, 3, 4)
    }
    assert [views[t]["audience"] for t in (1, 2, 3, 4)] == [
        "affected person", "operator", "auditor", "debug",
    ]  # fmt: skip
    assert {v["template_version"] for v in views.values()} == {"v2"}
    sha = views[4]["view"]["record"]["model_sha256"]
    assert sha not in json.dumps(views[1]) and sha not in json.dumps(views[2])
    assert views[3]["view"]["provenance"]["model_sha256"] == sha
    assert views[3]["view"]["reviews"][0]["decision"] == "escalate"
    assert views[2]["view"]["review"]["latest"]["reason"] == "check the debt ratio"
    assert views[4]["view"]["record"]["model_version"] == "2.0.0"
    past = api.get(
        "/v1/tenants/acme/explanations/r-1", ACME, tier=4, as_of=api.between.isoformat()
    ).json()
    assert (past["source"], past["view"]["record"]["model_version"]) == ("iceberg", "1.0.0")
    assert past["as_of"] == api.between.isoformat()
    assert past["view"]["reviews"] == []  # the review came after that time
    assert api.get("/v1/tenants/acme/explanations/r-1", ACME, tier=5).status_code == 422
    bad_time = api.get("/v1/tenants/acme/explanations/r-1", ACME, as_of="yesterday")
    assert bad_time.status_code == 400
    assert api.get("/v1/tenants/acme/explanations/r-1", ACME_T2, tier=2).status_code == 200
    assert api.get("/v1/tenants/acme/explanations/r-1", ACME_T2, tier=3).status_code == 403


def test_the_letter_endpoint_prints_a_pdf(api: Api) -> None:
    response = api.get("/v1/tenants/acme/explanations/r-1/letter", ACME)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    html = api.get("/v1/tenants/acme/explanations/r-1/letter", ACME, format="html").text
    assert "How to contest this decision" in html and "appeals@acme.example" in html


def test_lookups_use_the_replica_only_while_it_is_fresh(api: Api) -> None:
    api.wait(lambda h: h["replica_fresh"], "the replica to be checked fresh")
    hot = api.get("/v1/tenants/acme/explanations/r-1", ACME, tier=4).json()
    assert hot["source"] == "replica"
    cold = api.get(
        "/v1/tenants/acme/explanations/r-1", ACME, tier=4, as_of=datetime.now(UTC).isoformat()
    ).json()
    assert cold["source"] == "iceberg"
    for key in ("explanation_id", "model_version", "attributions", "prediction"):
        assert hot["view"]["record"][key] == cold["view"]["record"][key], key
    assert hot["view"]["reviews"] == cold["view"]["reviews"]
    # A commit the replica has not seen yet: lookups go to Iceberg, and find the new row.
    before = api.wait(lambda h: True, "health")["snapshot_id"]
    new = _row("acme", "r-3", run_id="run-3")
    append_explanations(api.catalog, [new], "b-3")
    api.wait(lambda h: h["snapshot_id"] != before and not h["replica_fresh"], "the new snapshot")
    assert api.get("/v1/tenants/acme/explanations/r-1", ACME).json()["source"] == "iceberg"
    assert api.get("/v1/tenants/acme/explanations/r-3", ACME).json()["source"] == "iceberg"
    client = api.replica.client()
    try:
        index_records(client, api.replica, [new])
        client.indices.refresh(index=f"{api.replica.index_prefix}-*")
    finally:
        client.close()
    api.wait(lambda h: h["replica_fresh"], "the replica to catch up")
    assert api.get("/v1/tenants/acme/explanations/r-3", ACME).json()["source"] == "replica"


class _Stream(threading.Thread):
    """One SSE connection that collects explanation events until told to stop."""

    def __init__(self, base: str, tenant: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{base}/v1/tenants/{tenant}/explanations/stream"
        self.key = key
        self.ready = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.stream("GET", self.url, headers=headers, timeout=60) as response:
            kind = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind == "ready":
                    self.ready.set()
                elif line.startswith("data:") and kind == "explanation":
                    self.events.append(json.loads(line.split(":", 1)[1]))
                if self.stop.is_set():
                    return


def test_the_stream_delivers_each_tenant_its_own_new_explanations(api: Api) -> None:
    acme, globex = _Stream(api.base, "acme", ACME), _Stream(api.base, "globex", GLOBEX)
    for stream in (acme, globex):
        stream.start()
        assert stream.ready.wait(30)
    api.wait(lambda h: h["stream_subscribers"] >= 2, "both streams to subscribe")
    rows = [_row("acme", "s-1"), _row("acme", "s-2"), _row("globex", "s-9")]
    append_explanations(api.catalog, rows, "b-stream")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(acme.events) < 2 or len(globex.events) < 1):
        time.sleep(0.05)
    time.sleep(1.5)  # a ping (every 1 s) lets the readers notice `stop`; late extras would show
    for stream in (acme, globex):
        stream.stop.set()
    assert sorted(e["request_id"] for e in acme.events) == ["s-1", "s-2"]
    assert [e["request_id"] for e in globex.events] == ["s-9"]
    assert {e["tenant_id"] for e in acme.events} == {"acme"}
    assert "attributions" not in acme.events[0]  # the stream carries the tier-2 summary only


def test_the_auditor_page_is_served_with_a_strict_policy(api: Api) -> None:
    page = api.get("/")
    assert page.status_code == 200 and "whylake auditor" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert api.get("/static/auditor.js").status_code == 200
    assert api.get("/static/../app.py").status_code == 404


def test_the_auditor_page_in_a_real_browser(api: Api, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import CHROMEDRIVER, FLAGS

    options = webdriver.ChromeOptions()
    options.binary_location = require_chromium()
    for flag in FLAGS:
        options.add_argument(flag.replace("--headless", "--headless=new"))
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    wait = WebDriverWait(driver, 60)

    def view_says(text: str) -> None:
        wait.until(lambda d: text in d.find_element(By.ID, "view").text)

    try:
        driver.get(api.base + "/")
        driver.find_element(By.ID, "key").send_keys(ACME)
        driver.find_element(By.ID, "tenant").send_keys("acme")
        driver.find_element(By.ID, "request").send_keys("r-1")
        driver.find_element(By.ID, "go").click()
        view_says("AUDIT VIEW of request r-1")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == 2)
        reviews = driver.find_element(By.ID, "reviews").text
        assert "escalate" in reviews and "check the debt ratio" in reviews
        driver.find_element(By.CSS_SELECTOR, "button[data-tier='1']").click()
        view_says("How to contest")
        assert "Tier 1" in driver.find_element(By.ID, "view-title").text
        assert "template v2" in driver.find_element(By.ID, "meta").text
        # Reconstruct as of a past time: the first explanation, before the review.
        driver.execute_script(
            "document.getElementById('as-of').value = arguments[0]",
            api.between.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        driver.find_element(By.CSS_SELECTOR, "button[data-tier='4']").click()
        view_says('"model_version": "1.0.0"')
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == 1)
        assert "iceberg" in driver.find_element(By.ID, "meta").text
        driver.find_element(By.ID, "letter").click()
        wait.until(lambda d: d.find_elements(By.ID, "letter-link"))
        # Another tenant's key sees nothing, and is told only "not found".
        driver.find_element(By.ID, "key").clear()
        driver.find_element(By.ID, "key").send_keys(GLOBEX)
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: "404" in d.find_element(By.ID, "status").text)
        assert driver.find_element(By.ID, "view").text == ""
        assert driver.find_element(By.ID, "meta").text == ""
        assert not driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
        driver.save_screenshot(str(tmp_path / "auditor-page.png"))
    finally:
        driver.quit()


def test_whylake_serve_starts_from_the_command_line(api: Api, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from whylake.api.keys import add_key

    keys = tmp_path / "keys.yaml"
    key = add_key(keys, "acme", max_tier=1)
    assert key not in keys.read_text()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYLAKE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "whylake.jobs.cli", "serve", "--home", str(api.home),
         "--keys", str(keys), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                if httpx.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        one = httpx.get(f"{base}/v1/tenants/acme/explanations/r-1", headers=headers, timeout=30)
        assert one.status_code == 200 and one.json()["source"] == "iceberg"  # no replica given
        deeper = httpx.get(
            f"{base}/v1/tenants/acme/explanations/r-1?tier=3", headers=headers, timeout=30
        )
        assert deeper.status_code == 403
    finally:
        server.terminate()
        server.wait(timeout=30)
    no_keys = subprocess.run(
        [sys.executable, "-m", "whylake.jobs.cli", "serve", "--home", str(api.home)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert no_keys.returncode == 2 and "--keys" in no_keys.stdout + no_keys.stderr
