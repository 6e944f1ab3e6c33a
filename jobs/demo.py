"""`make demo`: models, two days of logs, batch runs, SQL, a reconstruction, the monitor."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console

DEMO_SQL = """
SELECT a.feature,
       round(SUM(e.ht_weight * a.value) / SUM(e.ht_weight), 4) AS weighted_mean_attribution,
       COUNT(*) AS explained_rows
FROM explanations e, UNNEST(e.attributions) AS u(a)
GROUP BY a.feature ORDER BY abs(weighted_mean_attribution) DESC LIMIT 5
"""


def run_demo(home: Path, per_tenant: int, day: date | None, console: Console) -> None:
    """Everything `make demo` shows, on the embedded default under `home`."""
    from whylake.jobs.batch_job import run_batch
    from whylake.jobs.demo_data import FeatureShift, generate_day, yesterday
    from whylake.jobs.demo_kinds import register_kind_models
    from whylake.jobs.demo_models import register_demo_models
    from whylake.jobs.options import hash_key
    from whylake.jobs.output import print_arrow
    from whylake.lake.audit import run_tenant_sql
    from whylake.lake.catalog import CatalogConfig, ensure_tables, open_catalog
    from whylake.lake.reconstruct import reconstruct, to_json
    from whylake.pipelines.configs import BatchJobConfig, StoreConfig
    from whylake.registry.store import ModelRegistry
    from whylake.transforms.sampling.policy import default_policy_file, load_policies
    from whylake.views.report import write_html_report

    day = day or yesterday()
    registry = ModelRegistry(home / "models")
    console.rule("1. train and register the demo models (scikit-learn's bundled data sets)")
    kinds = register_kind_models(registry, home / "demo-models")
    for card in [*register_demo_models(registry), *kinds]:
        console.print(
            f"{card.tenant_id:8} {card.model_id}/{card.model_version} ({card.kind}: "
            f"{card.architecture}, {card.task}, explains {card.explained_output}) "
            f"sha256 {card.artifact_sha256[:16]}… {card.training}",
            highlight=False,
        )
    previous = day - timedelta(days=1)
    console.rule(
        f"2. generate {per_tenant:,} inference records per tenant for {previous} and {day}"
    )
    # The day before is ordinary; on `day`, globex's s5 arrives stuck near its training mean
    # (an upstream join filling a default): whylake monitor must flag that day and no other.
    days = {
        previous: generate_day(
            registry, home / "demo-input" / previous.isoformat(), previous, per_tenant, seed=6
        ),
        day: generate_day(
            registry,
            home / "demo-input" / day.isoformat(),
            day,
            per_tenant,
            shifts={DRIFT_TENANT: FeatureShift(DRIFT_FEATURE)},
        ),
    }
    for generated in days.values():
        for path in generated.paths:
            console.print(f"  {path}", highlight=False)
        console.print(
            f"  {generated.records:,} records, {generated.malformed} malformed on purpose"
        )
    console.print(
        f"  on {day}, {DRIFT_TENANT}'s {DRIFT_FEATURE} is stuck near its mean", highlight=False
    )
    catalog_config = CatalogConfig.embedded(home)
    for step, (run_day, generated) in enumerate(days.items()):
        console.rule(f"3{'ab'[step]}. the batch job for {run_day}")
        summary = run_batch(
            BatchJobConfig(
                inputs=tuple(str(p) for p in generated.paths),
                store=StoreConfig(
                    registry_root=str(home / "models"),
                    policies=load_policies(default_policy_file()),
                    # The demo alone uses the public key: its data is generated, its users made up.
                    hash_key=hash_key(insecure_demo_key=True),
                    catalog=catalog_config,
                ),
                day=run_day,
            ),
            console,
        )
    catalog = open_catalog(catalog_config)
    ensure_tables(catalog)
    console.rule("4. an audit query: acme's HT-weighted mean attribution per feature")
    console.print(f'whylake sql --tenant acme "{" ".join(DEMO_SQL.split())}"', highlight=False)
    print_arrow(run_tenant_sql(catalog, "acme", DEMO_SQL), "table")
    console.rule("5. a reconstruction: the latest flagged acme request, as recorded")
    flagged = run_tenant_sql(
        catalog,
        "acme",
        "SELECT request_id FROM explanations WHERE sampling_reason LIKE "
        "'always:%' ORDER BY counterfactual_status = 'found' DESC, request_id LIMIT 1",
    )
    request_id = flagged.column("request_id")[0].as_py()
    rec = reconstruct(catalog, "acme", request_id)
    record = json.loads(to_json(rec))["record"]
    top = sorted(record["attributions"], key=lambda a: -abs(a["value"]))[:5]
    brief = {
        "snapshot_id": rec.snapshot_id,
        "explanations_of_this_request": len(rec.history),
        **{
            k: record[k]
            for k in (
                "request_id",
                "event_ts",
                "model_id",
                "model_version",
                "model_sha256",
                "prediction",
                "base_value",
                "explainer_method",
                "completeness_error",
                "stability",
                "sampling_reason",
                "ht_weight",
                "summary",
                "counterfactual_status",
            )
        },
        "top_attributions": [
            {
                "feature": a["feature"],
                "value": round(a["value"], 5),
                "input_value": a["input_value"],
            }
            for a in top
        ],
        "closest_counterfactual": (record["counterfactuals"] or [None])[0],
    }
    console.print(
        f"whylake reconstruct --tenant acme --request-id {request_id}  (abridged; "
        "the command prints the whole record)",
        highlight=False,
    )
    console.print_json(json.dumps(brief, default=str))
    report = home / "reports" / f"acme-{request_id}.html"
    write_html_report(rec, report)
    console.print(f"HTML report: {report}", highlight=False)
    console.rule("6. the other model kinds: what explained each, and a text row's tokens")
    for tenant in ("umbrella", "hooli", "vandelay"):
        kinds = run_tenant_sql(
            catalog,
            tenant,
            "SELECT model_kind, explainer_kind, explained_output, count(*) AS rows, "
            "max(completeness_error) AS max_error FROM explanations GROUP BY ALL",
        )
        print_arrow(kinds, "table")
    text_row = run_tenant_sql(
        catalog,
        "vandelay",
        "SELECT request_id FROM explanations ORDER BY abs(prediction - base_value) DESC LIMIT 1",
    )
    if text_row.num_rows:
        text_rec = reconstruct(catalog, "vandelay", text_row.column("request_id")[0].as_py())
        console.print(text_rec.record["summary"], highlight=False)
        text_report = home / "reports" / f"vandelay-{text_rec.request_id}.html"
        write_html_report(text_rec, text_report)
        console.print(f"HTML report with the tokens highlighted: {text_report}", highlight=False)
    _views_and_letter(catalog, request_id, home, console)
    run_monitor_step(home, previous, day, console)
    console.rule(f"done: run {summary.record.run_id} ({summary.status})")


def _views_and_letter(catalog: object, request_id: str, home: Path, console: Console) -> None:
    """Step 7: the Tier 1 view of that record, in words, and its explanation letter."""
    from whylake.jobs.options import chromium_path
    from whylake.lake.reconstruct import reconstruct
    from whylake.lake.reviews import with_reviews
    from whylake.views.letter import LetterConfig, write_letter
    from whylake.views.tiers import build_view

    console.rule("7. the acme record for the person it is about: Tier 1, and the letter")
    rec = with_reviews(catalog, reconstruct(catalog, "acme", request_id))  # type: ignore[arg-type]
    view = build_view(rec, 1)
    console.print(
        f"whylake reconstruct --tenant acme --request-id {request_id} --tier 1  "
        f"(template {view.template_version})",
        highlight=False,
    )
    # The view's first sentence: the decision, in the words the affected person reads.
    console.print(view.text.splitlines()[0], highlight=False)
    chromium = chromium_path()
    letter = home / "letters" / f"acme-{request_id}.{'pdf' if chromium else 'html'}"
    write_letter(rec, letter, LetterConfig(chromium=chromium))
    console.print(f"letter: {letter}", highlight=False)


DRIFT_TENANT, DRIFT_FEATURE = "globex", "s5"


def run_monitor_step(home: Path, first: date, last: date, console: Console) -> None:
    """Step 8: `whylake monitor` for every demo tenant over both days, and one HTML report."""
    from whylake.jobs.demo_models import DEMO_TENANTS
    from whylake.jobs.monitor_commands import evaluate_tenant, print_report
    from whylake.views.monitor_report import write_monitor_report

    console.rule(f"8. whylake monitor --tenant <t> --since {first} (SLIs, drift, SLO burn, alerts)")
    for tenant in DEMO_TENANTS:
        report = evaluate_tenant(tenant, home=home, since=first, until=last)
        print_report(report)
        if tenant == DRIFT_TENANT:
            path = write_monitor_report(report, home / "reports" / f"monitor-{tenant}.html")
            console.print(f"HTML report: {path}", highlight=False)
