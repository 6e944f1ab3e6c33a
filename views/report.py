"""A one-page, self-contained HTML report of a reconstructed explanation record."""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from whylake.lake.reconstruct import Reconstruction
from whylake.schemas.errors import ConfigError
from whylake.schemas.explanation_policy import ExplanationPolicies
from whylake.views.letter import letter_html
from whylake.views.tiers import TIER_NAMES, View, build_view

TOP_ATTRIBUTIONS = 12
_RAISES, _LOWERS, _OTHERS = "#d9480f", "#1c7ed6", "#adb5bd"


def write_html_report(
    reconstruction: Reconstruction,
    path: str | Path,
    tier: int = 3,
    *,
    policies: ExplanationPolicies | None = None,
    lang: str = "en",
    template_version: str | None = None,
) -> Path:
    """Write the report of one tier to `path` (UTF-8) and return it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    html = render_html(
        reconstruction, tier, policies=policies, lang=lang, template_version=template_version
    )
    target.write_text(html, encoding="utf-8")
    return target


def render_html(
    reconstruction: Reconstruction,
    tier: int = 3,
    *,
    policies: ExplanationPolicies | None = None,
    lang: str = "en",
    template_version: str | None = None,
) -> str:
    """One tier's page as one HTML string: inline CSS, charts as base64 PNGs, no external asset.

    Tier 1 is the explanation letter's page, tier 2 the operator's summary, tier 3 the full
    audit report, tier 4 the raw record; each states the template version it was worded with.
    """
    if tier == 1:
        return letter_html(
            reconstruction, policies=policies, lang=lang, template_version=template_version
        )
    view = build_view(
        reconstruction, tier, policies=policies, lang=lang, template_version=template_version
    )
    if tier == 2:
        return _operator_page(reconstruction, view)
    if tier == 4:
        title = f"Raw record of request {reconstruction.request_id}"
        body = (
            f"<header><h1>{_e(title)}</h1><p class=sub>Tier 4 ({TIER_NAMES[4]}) · template "
            f"{_e(view.template_version)}</p></header><pre>{_e(view.text)}</pre>"
        )
        return _PAGE.format(title=_e(title), css=_CSS, body=body)
    if tier != 3:
        raise ConfigError(f"tier must be 1, 2, 3 or 4, got {tier!r}")
    return _audit_page(reconstruction, view)


def _operator_page(reconstruction: Reconstruction, view: View) -> str:
    """Tier 2: the operator's page: top factors, confidence, review status, caveats."""
    v = view.data
    r = reconstruction.record
    top = [a for a in r.get("attributions") or [] if _finite(a.get("value"))]
    top.sort(key=lambda a: (-abs(a["value"]), a["feature"]))
    chart = _chart_png(top[:5], top[5:]) if top else ""
    image = f'<img alt="Top factors" src="data:image/png;base64,{chart}">' if chart else ""
    review = v["review"]
    latest = review.get("latest")
    rows = [
        ("Prediction", _num(v.get("prediction"))),
        ("Decision", (v.get("decision") or {}).get("outcome")),
        ("Confidence (producer)", _num(v.get("confidence"))),
        ("Risk score (producer)", _num(v.get("risk_score"))),
        ("Trust tier", v.get("trust_tier")),
        ("Stability", _num(v.get("stability"))),
        ("IG vs SHAP agreement", _num(v["agreement"].get("value"))),
        ("Review route", review.get("route")),
        ("Route reasons", ", ".join(review.get("reasons") or []) or None),
        (
            "Latest review",
            f"{latest['decision']}: {latest['reason']}" if latest else "not reviewed yet",
        ),
    ]
    caveat = (
        '<p class="summary" id="caveat">The explainers disagree on this record: check the '
        "reasons before relying on them.</p>"
        if v["agreement"].get("disagree")
        else ""
    )
    title = f"Request {r['request_id']} for the operator"
    body = "\n".join(
        [
            f"<header><h1>{_e(title)}</h1><p class=sub>Tier 2 ({TIER_NAMES[2]}) · tenant "
            f"<b>{_e(r['tenant_id'])}</b> · template {_e(view.template_version)}</p></header>",
            caveat,
            f"<pre class=tier-text>{_e(view.text)}</pre>",
            '<div class="grid">',
            _card("Status", _table_kv(rows)),
            _card("Top factors", image),
            "</div>",
            f"<footer>Template version {_e(view.template_version)} · reference "
            f"<code>{_e(r.get('explanation_id'))}</code></footer>",
        ]
    )
    return _PAGE.format(title=_e(title), css=_CSS, body=body)


def _audit_page(reconstruction: Reconstruction, view: View) -> str:
    """Tier 3: the full audit report."""
    r = reconstruction.record
    title = f"Explanation of request {r['request_id']} ({r['tenant_id']})"
    sections = [
        _header(reconstruction),
        f'<p class="summary">{_e(r.get("summary"))}</p>',
        '<div class="grid">',
        _prediction(r),
        _quality(r),
        "</div>",
        _tokens(r) if r.get("token_attributions") else _attributions(r),
        _counterfactuals(r),
        '<div class="grid">',
        _provenance(reconstruction),
        _sampling(r),
        "</div>",
        _explainer(r),
        _policy_and_producer(view),
        _reviews(reconstruction),
        _history(reconstruction),
        _footer(r, view.template_version),
    ]
    body = "\n".join(s for s in sections if s)
    return _PAGE.format(title=_e(title), css=_CSS, body=body)


# --- sections -------------------------------------------------------------------------------


def _header(rec: Reconstruction) -> str:
    r = rec.record
    when = f"as of {_time(rec.as_of)} (requested)" if rec.as_of is not None else "current state"
    flags = "".join(f'<span class="flag">{_e(f)}</span>' for f in r.get("flags") or [])
    return (
        f"<header><h1>Why request <code>{_e(r['request_id'])}</code> scored "
        f"{_num(r.get('prediction'))}</h1>"
        f'<p class="sub">Tenant <b>{_e(r["tenant_id"])}</b> · {when} · Iceberg snapshot '
        f"<code>{_e(rec.snapshot_id)}</code> committed {_time(rec.snapshot_committed_at)}"
        f"{' · ' + flags if flags else ''}</p></header>"
    )


def _prediction(r: dict[str, Any]) -> str:
    prediction: Any = r.get("prediction")
    base: Any = r.get("base_value")
    delta = prediction - base if _finite(prediction) and _finite(base) else None
    rows = [
        ("Output explained", _explained(r)),
        ("Prediction (re-scored)", _num(prediction)),
        ("Logged score", _num(r.get("logged_score"))),
        ("Base value", _num(base)),
        ("Prediction − base", _num(delta, signed=True)),
        ("Predicted class", r.get("predicted_class")),
    ]
    return _card("Prediction", _table_kv(rows))


def _quality(r: dict[str, Any]) -> str:
    rows = [
        (
            "Completeness error",
            _num(r.get("completeness_error")),
            "|sum of attributions − (prediction − base)|; near 0 is good",
        ),
        (
            "Stability",
            _num(r.get("stability")),
            "1 = the top features keep their ranking across baselines / seeds",
        ),
        ("SHAP additivity error", _num(r.get("shap_additivity_error")), "when SHAP was computed"),
        ("Score drift", _num(r.get("score_drift")), "|re-scored − logged score|"),
    ]
    body = "".join(
        f"<tr><th>{_e(k)}</th><td><b>{_e(v)}</b><div class=note>{_e(n)}</div></td></tr>"
        for k, v, n in rows
    )
    return _card("Quality of the explanation", f"<table class=kv>{body}</table>")


def _attributions(r: dict[str, Any]) -> str:
    attributions = list(r.get("attributions") or [])
    if not attributions:
        return _card("Attributions", "<p>No attributions were recorded.</p>")
    # Output checks keep non-finite values out of the table, but a report must still render.
    drawable = [a for a in attributions if _finite(a["value"])]
    by_size = sorted(drawable, key=lambda a: (-abs(a["value"]), a["feature"]))
    ordered = by_size + [a for a in attributions if not _finite(a["value"])]
    total = sum(a["value"] for a in drawable)
    chart = _chart_png(by_size[:TOP_ATTRIBUTIONS], by_size[TOP_ATTRIBUTIONS:]) if by_size else ""
    shown = min(len(drawable), TOP_ATTRIBUTIONS)
    skipped = len(attributions) - len(drawable)
    caption = (
        f"Top {shown} of {len(ordered)} features by the size of their contribution to "
        f"{_e(r.get('output_name') or 'the score')}, measured from the base value. "
        f'<span style="color:{_RAISES}">■</span> raises the score, '
        f'<span style="color:{_LOWERS}">■</span> lowers it. '
        f"Sum of all attributions: {_num(total, signed=True)}."
        + (f" <b>{skipped} non-finite attributions are not drawn.</b>" if skipped else "")
    )
    rows = "".join(
        f"<tr><td>{_e(a['feature'])}</td><td class=num>{_num(a.get('input_value'))}</td>"
        f"<td class=num>{_num(a.get('baseline_value'))}</td>"
        f"<td class=num>{_num(a['value'], signed=True)}</td></tr>"
        for a in ordered
    )
    table = (
        f"<details><summary>All {len(ordered)} attributions</summary><table class=grid-table>"
        "<tr><th>Feature</th><th>Input</th><th>Baseline</th><th>Attribution</th></tr>"
        f"{rows}</table></details>"
    )
    image = (
        f'<img alt="Bar chart of the top {shown} attributions" src="data:image/png;base64,{chart}">'
        if chart
        else ""
    )
    return _card("What drove the prediction", f"{image}<p class=note>{caption}</p>{table}")


def _tokens(r: dict[str, Any]) -> str:
    """The text with each token highlighted by its attribution (text models)."""
    text = str(r.get("input_text") or "")
    tokens = sorted(
        (t for t in r.get("token_attributions") or [] if _finite(t["value"])),
        key=lambda t: (t["start"], t["end"]),
    )
    scale = max((abs(t["value"]) for t in tokens), default=0.0) or 1.0
    parts, at = [], 0
    for t in tokens:
        start, end = int(t["start"]), int(t["end"])
        if start < at or end > len(text):
            continue  # offsets that overlap or leave the text are listed below, not drawn
        parts.append(_e(text[at:start]))
        color = "217,72,15" if t["value"] > 0 else "28,126,214"
        alpha = 0.15 + 0.75 * abs(t["value"]) / scale
        parts.append(
            f'<mark class=tok style="background:rgba({color},{alpha:.2f})" '
            f'title="{_e(t["token"])}: {_num(t["value"], signed=True)}" '
            f'data-value="{t["value"]:.6g}">{_e(text[start:end])}</mark>'
        )
        at = end
    parts.append(_e(text[at:]))
    by_size = sorted(tokens, key=lambda t: (-abs(t["value"]), t["start"]))
    rows = "".join(
        f"<tr><td>{_e(t['token'])}</td><td class=num>{t['start']}–{t['end']}</td>"
        f"<td class=num>{_num(t['value'], signed=True)}</td></tr>"
        for t in by_size
    )
    caption = (
        f"Each token of the text shaded by its contribution to {_e(_explained(r))}: "
        f'<span style="color:{_RAISES}">■</span> raises it, '
        f'<span style="color:{_LOWERS}">■</span> lowers it (Integrated Gradients on the input '
        "embeddings, measured from a text of padding tokens)."
    )
    table = (
        f"<details><summary>All {len(tokens)} token attributions</summary>"
        "<table class=grid-table><tr><th>Token</th><th>Characters</th><th>Attribution</th></tr>"
        f"{rows}</table></details>"
    )
    return _card(
        "What drove the prediction",
        f'<p class="text-input">{"".join(parts)}</p><p class=note>{caption}</p>{table}',
    )


def _explained(r: dict[str, Any]) -> str:
    name = str(r.get("output_name") or "the score")
    output = r.get("explained_output")
    if output == "log_odds":
        return f"the log-odds of {name}"
    if output == "logit":
        return f"the logit of {name}"
    return name


def _counterfactuals(r: dict[str, Any]) -> str:
    cfs = r.get("counterfactuals") or []
    status = r.get("counterfactual_status")
    if not cfs:
        if status in (None, "not_requested"):
            return ""
        return _card(
            "What would have changed the outcome", f"<p>Counterfactual search: {_e(status)}.</p>"
        )
    rows = []
    for cf in sorted(cfs, key=lambda c: c.get("rank", 0)):
        changes = "<br>".join(
            f"{_e(c['feature'])}: {_num(c['from_value'])} → <b>{_num(c['to_value'])}</b>"
            for c in cf.get("changes") or []
        )
        rows.append(
            f"<tr><td class=num>{_e(cf.get('rank'))}</td><td>{changes}</td>"
            f"<td class=num>{_num(cf.get('score'))}</td>"
            f"<td>{'yes' if cf.get('valid') else '<b>no</b>'}</td>"
            f"<td class=num>{_num(cf.get('proximity'))}</td>"
            f"<td class=num>{_e(cf.get('sparsity'))}</td>"
            f"<td class=num>{_num(cf.get('plausibility'))}</td></tr>"
        )
    table = (
        "<table class=grid-table><tr><th>Rank</th><th>Changes</th><th>New score</th>"
        "<th>Valid</th><th>Distance</th><th>Features changed</th><th>Plausibility</th></tr>"
        f"{''.join(rows)}</table>"
        "<p class=note>Valid: the model, re-scored on the changed input, reaches the target. "
        "Distance: L1 scaled by each feature's median absolute deviation.</p>"
    )
    return _card("What would have changed the outcome", table)


def _provenance(rec: Reconstruction) -> str:
    r = rec.record
    rows = [
        ("Tenant", r.get("tenant_id")),
        ("Request", r.get("request_id")),
        ("Event time", _time(r.get("event_ts"))),
        ("Explained at", _time(r.get("explained_at"))),
        ("Run", r.get("run_id")),
        ("Model", f"{r.get('model_id')} version {r.get('model_version')}"),
        ("Model sha256", _Code(r.get("model_sha256"))),
        ("Input sha256", _Code(r.get("input_hash"))),
        ("Source", r.get("source")),
        ("Policy version", r.get("policy_version")),
        ("Snapshot", _Code(rec.snapshot_id)),
        ("Snapshot committed", _time(rec.snapshot_committed_at)),
    ]
    return _card("Who, what, when", _table_kv(rows))


def _sampling(r: dict[str, Any]) -> str:
    rows = [
        ("Policy", r.get("sampling_policy")),
        ("Reason", r.get("sampling_reason")),
        ("Inclusion probability", _num(r.get("inclusion_probability"))),
        ("Estimator weight (1/p)", _num(r.get("ht_weight"))),
        ("Stratum size", r.get("stratum_size")),
    ]
    note = (
        "<p class=note>Why this prediction was explained. Weighting each sampled row by 1/p "
        "gives unbiased totals over all predictions (Horvitz–Thompson).</p>"
    )
    return _card("Why it was sampled", _table_kv(rows) + note)


def _explainer(r: dict[str, Any]) -> str:
    rows = [
        ("Method", r.get("explainer_method")),
        ("Model kind", r.get("model_kind") or "torch (recorded before model kinds)"),
        ("Output explained", _explained(r)),
        ("Largest standard error", _num(r.get("attribution_std_error"))),
        ("Model source", r.get("model_source")),
        ("Baseline", r.get("baseline_kind")),
        ("Seed", r.get("seed")),
        ("Device", r.get("device")),
        ("Config sha256", _Code(r.get("explainer_config_hash"))),
        ("Library versions", _Code(_compact_json(r.get("explainer_versions")))),
    ]
    config = _pretty_json(r.get("explainer_config"))
    return _card(
        "Explainer",
        _table_kv(rows) + f"<p class=note>Configuration, as recorded:</p><pre>{_e(config)}</pre>",
    )


def _history(rec: Reconstruction) -> str:
    if not rec.history:
        return ""
    current = rec.record.get("explanation_id")
    rows = "".join(
        f"<tr{' class=current' if h['explanation_id'] == current else ''}>"
        f"<td>{_time(h['explained_at'])}</td><td>{_e(h['model_version'])}</td>"
        f"<td>{_e(h['explainer_method'])}</td><td>{_e(h['run_id'])}</td>"
        f"<td><code>{_e(str(h['explanation_id'])[:16])}…</code></td>"
        f"<td>{_e((h.get('latest_review') or {}).get('decision'))}</td></tr>"
        for h in rec.history
    )
    note = (
        "Every explanation of this request visible in the snapshot, oldest first; the "
        "highlighted one is shown above. Records are appended, never rewritten."
    )
    table = (
        "<table class=grid-table><tr><th>Explained at</th><th>Model version</th>"
        f"<th>Method</th><th>Run</th><th>Explanation id</th><th>Latest review</th></tr>{rows}"
        "</table>"
    )
    return _card(f"History ({len(rec.history)})", f"{table}<p class=note>{note}</p>")


def _policy_and_producer(view: View) -> str:
    v = view.data
    p, producer, agreement = v["provenance"], v["producer"], v["agreement"]
    rows = [
        ("Policy sha256", _Code(p.get("policy_hash") or p.get("policy_version"))),
        ("Explained with template", p.get("template_version")),
        ("Producer trust tier", producer.get("trust_tier")),
        ("Producer confidence", _num(producer.get("confidence"))),
        ("Producer label", producer.get("label")),
        ("Producer risk score", _num(producer.get("risk_score"))),
        ("Producer input hash", _Code(p.get("producer_input_hash"))),
        (
            "Input hashes match",
            None
            if p.get("input_hash_mismatch") is None
            else ("no — flagged" if p["input_hash_mismatch"] else "yes"),
        ),
        ("IG vs SHAP agreement", _num(agreement.get("value"))),
        ("Agreement method", agreement.get("method")),
        ("Review route", v["review"].get("route")),
        ("Route reasons", ", ".join(v["review"].get("reasons") or []) or None),
    ]
    caveat = (
        "<p class=note><b>The explainers disagree</b> on this record (agreement below "
        f"{_num(agreement.get('threshold'))}): it was routed to a person.</p>"
        if agreement.get("disagree")
        else ""
    )
    return _card("Policy, producer and agreement", _table_kv(rows) + caveat)


def _reviews(rec: Reconstruction) -> str:
    if not rec.reviews:
        return _card("Reviews", "<p>No person has reviewed this request yet.</p>")
    rows = "".join(
        f"<tr><td>{_time(rv['reviewed_at'])}</td><td>{_e(rv['decision'])}</td>"
        f"<td>{_e(rv['reason'])}</td><td><code>{_e(str(rv['reviewer_hash'])[:12])}…</code></td>"
        f"<td><code>{_e(str(rv['explanation_id'])[:12])}…</code></td></tr>"
        for rv in rec.reviews
    )
    table = (
        "<table class=grid-table><tr><th>When</th><th>Decision</th><th>Reason</th>"
        f"<th>Reviewer (hashed)</th><th>Explanation</th></tr>{rows}</table>"
    )
    return _card(f"Reviews ({len(rec.reviews)})", table)


def _footer(r: dict[str, Any], template_version: str) -> str:
    return (
        f"<footer>Explanation id <code>{_e(r.get('explanation_id'))}</code> · schema version "
        f"{_e(r.get('schema_version'))} · template version {_e(template_version)} · "
        "reconstructed by whylake from the Iceberg audit table; the same snapshot always "
        "yields the same record.</footer>"
    )


# --- the chart ------------------------------------------------------------------------------


def _chart_png(top: Sequence[dict[str, Any]], rest: Sequence[dict[str, Any]]) -> str:
    labels = [_label(a) for a in top]
    values = [float(a["value"]) for a in top]
    colors = [_RAISES if v >= 0 else _LOWERS for v in values]
    if rest:
        labels.append(f"{len(rest)} other features")
        values.append(sum(float(a["value"]) for a in rest))
        colors.append(_OTHERS)
    # Feature names are data: '$' must not start mathtext, and they are drawn as plain text.
    with rc_context({"text.parse_math": False, "font.size": 10, "svg.fonttype": "none"}):
        fig = Figure(figsize=(8.4, 0.42 * len(values) + 0.9), dpi=144)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        positions = list(range(len(values)))[::-1]  # the largest at the top
        ax.barh(positions, values, color=colors, height=0.62)
        ax.set_yticks(positions, labels)
        ax.axvline(0, color="#343a40", linewidth=0.8)
        # Room beyond the longest bar on each side for its value label.
        low, high = min(0.0, *values), max(0.0, *values)
        pad = 0.18 * ((high - low) or 1.0)
        ax.set_xlim(low - pad if low < 0 else 0.0, high + pad if high > 0 else 0.0)
        for y, v in zip(positions, values, strict=True):
            ax.annotate(
                _num(v, signed=True),
                (v, y),
                xytext=(4 if v >= 0 else -4, 0),
                textcoords="offset points",
                ha="left" if v >= 0 else "right",
                va="center",
                fontsize=9,
                color="#212529",
            )
        ax.set_xlabel("attribution (contribution to the score)")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.grid(axis="x", color="#e9ecef", linewidth=0.8)
        ax.set_axisbelow(True)
        fig.tight_layout()
        buffer = io.BytesIO()
        # No 'Software' metadata: the same record renders to the same bytes.
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _label(attribution: dict[str, Any], limit: int = 36) -> str:
    name = str(attribution["feature"])
    if len(name) > limit:
        name = name[: limit - 1] + "…"
    return f"{name} = {_num(attribution.get('input_value'))}"


# --- formatting -----------------------------------------------------------------------------


class _Code(str):
    """A value shown in monospace (hashes, ids)."""


def _card(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _table_kv(rows: Iterable[tuple[str, Any]]) -> str:
    cells = []
    for key, value in rows:
        if isinstance(value, _Code):
            shown = f"<code class=hash>{_e(value)}</code>"
        else:
            shown = _e("—" if value is None or value == "" else value)
        cells.append(f"<tr><th>{_e(key)}</th><td>{shown}</td></tr>")
    return f"<table class=kv>{''.join(cells)}</table>"


def _e(value: Any) -> str:
    return escape("—" if value is None else str(value), quote=True)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    if not _finite(value):
        return str(value)
    sign = "+" if signed else ""
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e6):
        return f"{value:{sign}.2e}"
    return f"{value:{sign}.4g}"


def _time(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.tzinfo else "")


def _pretty_json(text: Any) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except (TypeError, ValueError):
        return "" if text is None else str(text)


def _compact_json(text: Any) -> str:
    try:
        loaded = json.loads(text)
    except (TypeError, ValueError):
        return "" if text is None else str(text)
    if isinstance(loaded, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(loaded.items()))
    return json.dumps(loaded, sort_keys=True)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
</body>
</html>
"""

_CSS = """
.text-input { font-size: 17px; line-height: 2; }
mark.tok { padding: 1px 3px; border-radius: 3px; color: inherit; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #212529; max-width: 1000px; margin: 24px auto; padding: 0 20px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 0 0 8px; color: #495057; text-transform: uppercase;
     letter-spacing: .04em; }
.sub { color: #495057; margin: 0; }
.summary { font-size: 16px; background: #f1f3f5; border-left: 4px solid #495057;
           padding: 10px 14px; margin: 16px 0; }
section { border: 1px solid #dee2e6; border-radius: 6px; padding: 12px 16px; margin: 12px 0; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0 12px; }
.grid > section { margin: 6px 0; }
table { border-collapse: collapse; width: 100%; }
.kv th { text-align: left; font-weight: 600; color: #495057; padding: 3px 12px 3px 0;
         white-space: nowrap; vertical-align: top; width: 1%; }
.kv td { padding: 3px 8px 3px 0; vertical-align: top; }
.grid-table th, .grid-table td { border-bottom: 1px solid #e9ecef; padding: 4px 8px;
                                 text-align: left; vertical-align: top; }
.grid-table th { background: #f8f9fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { color: #6c757d; font-size: 12.5px; }
td .note { margin-top: 1px; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code.hash { word-break: break-all; }
pre { background: #f8f9fa; padding: 8px; border-radius: 4px; font-size: 12px;
      white-space: pre-wrap; word-break: break-word; margin: 4px 0 0; }
img { width: 100%; height: auto; display: block; }
tr.current td { background: #fff3bf; font-weight: 600; }
.flag { background: #ffe3e3; color: #c92a2a; border-radius: 3px; padding: 0 6px;
        margin-right: 4px; font-size: 12px; }
details { margin-top: 8px; }
footer { color: #868e96; font-size: 12px; margin: 16px 0 32px; }
@media (max-width: 760px) { .grid { grid-template-columns: 1fr; } }
@media print { section { break-inside: avoid; } }
"""
