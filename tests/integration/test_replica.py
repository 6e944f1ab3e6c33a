"""The OpenSearch hot replica against a real node started by infra/ (`make up`)."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from datetime import UTC, date

import pytest

from tests.integration.conftest import DAY, DemoHome
from whylake.jobs.batch_job import run_batch
from whylake.lake.catalog import EXPLANATIONS
from whylake.lake.opensearch import OpenSearchConfig
from whylake.lake.replica import SearchQuery, backfill, retention, search
from whylake.schemas.ids import check_tenant

pytestmark = pytest.mark.integration
# The node `make up` starts (infra/services.sh honours WHYLAKE_OPENSEARCH_PORT too).
URL = os.environ.get(
    "WHYLAKE_TEST_OPENSEARCH_URL",
    f"http://127.0.0.1:{os.environ.get('WHYLAKE_OPENSEARCH_PORT', '9200')}",
)


@pytest.fixture(scope="module")
def replica() -> OpenSearchConfig:
    config = OpenSearchConfig(url=URL, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    client = config.client()
    try:
        if not client.ping():
            pytest.fail(f"no OpenSearch at {URL}: start it with `make up` (infra/services.sh)")
        yield config
    finally:
        client.indices.delete(index=f"{config.index_prefix}-*", ignore_unavailable=True)
        client.close()


def _documents(config: OpenSearchConfig) -> Counter[str]:
    client = config.client()
    try:
        client.indices.refresh(index=f"{config.index_prefix}-*")
        response = client.search(
            index=f"{config.index_prefix}-*",
            body={"query": {"match_all": {}}, "size": 10_000, "_source": ["explanation_id"]},
        )
    finally:
        client.close()
    return Counter(h["_id"] for h in response["hits"]["hits"])


def _iceberg_ids(demo_home: DemoHome) -> set[str]:
    table = demo_home.catalog().load_table(EXPLANATIONS)
    return set(
        table.scan(selected_fields=("explanation_id",)).to_arrow()["explanation_id"].to_pylist()
    )


def test_every_explanation_is_replicated_exactly_once_even_on_rerun(
    demo_home: DemoHome, replica: OpenSearchConfig
) -> None:
    first = run_batch(demo_home.config(opensearch=replica)).record
    assert first.replica_lag == 0 and first.status == "succeeded"
    docs = _documents(replica)
    assert set(docs) == _iceberg_ids(demo_home)
    assert max(docs.values()) == 1
    run_batch(demo_home.config(opensearch=replica))
    assert _documents(replica) == docs


def test_unreachable_replica_leaves_iceberg_whole_and_backfill_catches_up(
    demo_home: DemoHome,
) -> None:
    config = OpenSearchConfig(url=URL, index_prefix=f"test-lag-{uuid.uuid4().hex[:8]}")
    down = OpenSearchConfig(
        url="http://127.0.0.1:9", index_prefix=config.index_prefix, max_retries=1, timeout_s=2
    )
    try:
        run = run_batch(demo_home.config(opensearch=down)).record
        expected = _iceberg_ids(demo_home)
        assert run.status == "succeeded_with_warnings"
        assert run.replica_lag == len(expected)  # every row: the replica saw none of them
        assert any("backfill" in w for w in run.warnings)
        outcome = backfill(demo_home.catalog(), config, DAY)
        assert (outcome.indexed, outcome.failed) == (len(expected), 0)
        assert set(_documents(config)) == expected
        backfill(demo_home.catalog(), config, DAY)  # a second backfill adds nothing
        assert sum(_documents(config).values()) == len(expected)
    finally:
        client = config.client()
        client.indices.delete(index=f"{config.index_prefix}-*", ignore_unavailable=True)
        client.close()


def test_a_tenant_search_never_returns_another_tenants_records(
    demo_home: DemoHome, replica: OpenSearchConfig
) -> None:
    backfill(demo_home.catalog(), replica, DAY)
    _documents(replica)  # refresh
    acme = search(replica, SearchQuery(tenant_id="acme", size=1000))
    assert acme and {d["tenant_id"] for d in acme} == {"acme"}
    some_globex = search(replica, SearchQuery(tenant_id="globex", size=1))[0]
    leaked = search(replica, SearchQuery(tenant_id="acme", request_id=some_globex["request_id"]))
    assert leaked == []
    one = search(replica, SearchQuery(tenant_id="globex", request_id=some_globex["request_id"]))
    assert [d["explanation_id"] for d in one] == [some_globex["explanation_id"]]
    for widening in ("*", "acme,globex", "acme-*", "../globex", "ACME"):
        with pytest.raises(ValueError, match="must match"):
            check_tenant(widening)


def test_feature_and_time_range_query(demo_home: DemoHome, replica: OpenSearchConfig) -> None:
    backfill(demo_home.catalog(), replica, DAY)
    _documents(replica)
    hits = search(
        replica, SearchQuery(tenant_id="globex", feature="bmi", min_abs_attribution=5.0, size=500)
    )
    assert hits
    for doc in hits:
        bmi = next(a for a in doc["attributions"] if a["feature"] == "bmi")
        assert abs(bmi["value"]) >= 5.0
    from datetime import datetime

    none = search(replica, SearchQuery(tenant_id="globex", since=datetime(2030, 1, 1, tzinfo=UTC)))
    assert none == []


def test_retention_drops_only_indices_older_than_the_window(
    demo_home: DemoHome, replica: OpenSearchConfig
) -> None:
    backfill(demo_home.catalog(), replica, DAY)
    kept = retention(replica, days=30, today=DAY)
    assert kept == []
    deleted = retention(replica, days=30, today=date(2027, 1, 15))
    assert deleted and all(DAY.strftime("%Y.%m.%d") in name for name in deleted)
    assert _documents(replica) == Counter()
