"""The OpenSearch hot replica against a real node started by infra/ (`make up`)."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from datetime import UTC, date, datetime

import pytest

from tests.integration.conftest import DAY, DemoHome
from whylake.jobs.batch_job import run_batch
from whylake.lake.catalog import EXPLANATIONS
from whylake.lake.opensearch import OpenSearchConfig
from whylake.lake.replica import (
    SearchQuery,
    _prepare_for_load,
    _restore_after_load,
    backfill,
    retention,
    search,
)
from whylake.schemas.ids import check_tenant
from whylake.schemas.opensearch import TOP_K

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
        _drop(config)
        client.close()


def _drop(config: OpenSearchConfig) -> None:
    client = config.client()
    try:
        client.indices.delete(index=f"{config.index_prefix}-*", ignore_unavailable=True)
        if client.indices.exists_index_template(name=config.index_prefix):
            client.indices.delete_index_template(name=config.index_prefix)
    finally:
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
        _drop(config)


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
        replica,
        SearchQuery(tenant_id="globex", feature="bmi", min_abs_attribution=5.0, size=5000),
    )
    # The same question answered from Iceberg: bmi among the top 5 by |attribution|, >= 5.
    rows = (
        demo_home.catalog()
        .load_table(EXPLANATIONS)
        .scan(selected_fields=("explanation_id", "tenant_id", "attributions"))
        .to_arrow()
        .to_pylist()
    )
    expected = set()
    for row in rows:
        top = sorted(row["attributions"], key=lambda a: abs(a["value"]), reverse=True)[:TOP_K]
        if row["tenant_id"] == "globex" and any(
            a["feature"] == "bmi" and abs(a["value"]) >= 5.0 for a in top
        ):
            expected.add(row["explanation_id"])
    assert expected, "the demo data should have explanations driven by bmi"
    assert {d["explanation_id"] for d in hits} == expected
    for doc in hits:  # the full list is still stored
        assert len(doc["attributions"]) > len(doc["top_features"]) == TOP_K
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


def test_indices_come_from_the_template_with_flat_top_k_and_an_alias(
    demo_home: DemoHome, replica: OpenSearchConfig
) -> None:
    backfill(demo_home.catalog(), replica, DAY)
    client = replica.client()
    try:
        name = replica.index_for("acme", DAY)
        mapping = client.indices.get_mapping(index=name)[name]["mappings"]
        props = mapping["properties"]
        assert props["attributions"] == {"type": "object", "enabled": False}
        assert all(p.get("type") != "nested" for p in props.values())
        assert props["top_features"] == {"type": "keyword"}
        assert props["attribution_top_1"]["properties"]["abs_value"] == {"type": "double"}
        settings = client.indices.get_settings(index=name)[name]["settings"]["index"]
        # The backfill restored the template's values after loading with refresh off.
        assert settings["refresh_interval"] == replica.refresh_interval
        assert settings["number_of_replicas"] == str(replica.number_of_replicas)
        aliased = client.indices.get_alias(name=replica.index_prefix)
        assert name in aliased and len(aliased) == len(
            client.indices.get(index=f"{replica.index_prefix}-*")
        )
    finally:
        client.close()


def test_bulk_load_settings_are_switched_on_and_restored(replica: OpenSearchConfig) -> None:
    client = replica.client()
    row = {"tenant_id": "initech", "event_ts": datetime(2026, 1, 2, tzinfo=UTC)}
    name = replica.index_for("initech", date(2026, 1, 2))
    loading: set[str] = set()
    try:
        _prepare_for_load(client, replica, [row], loading)
        during = client.indices.get_settings(index=name)[name]["settings"]["index"]
        assert during["refresh_interval"] == "-1" and loading == {name}
        _restore_after_load(client, replica, loading)
        after = client.indices.get_settings(index=name)[name]["settings"]["index"]
        assert after["refresh_interval"] == replica.refresh_interval
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
        client.close()


def test_an_index_of_the_same_version_gets_the_optional_columns_added_since(
    replica: OpenSearchConfig,
) -> None:
    """An optional column appended without a version bump (explain_seconds, issue 9) reaches an
    index made before it: a strict mapping would otherwise refuse every new document."""
    from whylake.lake.opensearch import upgrade_mapping
    from whylake.schemas.opensearch import explanation_mapping

    client = replica.client()
    # Outside the template's pattern, so the index has exactly the older mapping it is given.
    name = f"older-{replica.index_prefix}"
    try:
        older = explanation_mapping()
        older["properties"].pop("explain_seconds")
        client.indices.create(index=name, body={"mappings": older})
        before = client.indices.get_mapping(index=name)[name]["mappings"]["properties"]
        assert "explain_seconds" not in before
        upgrade_mapping(client, name)
        props = client.indices.get_mapping(index=name)[name]["mappings"]["properties"]
        assert props["explain_seconds"] == {"type": "double"}
        client.index(index=name, body={"tenant_id": "acme", "explain_seconds": 0.01}, refresh=True)
        assert client.count(index=name)["count"] == 1
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
        client.close()
