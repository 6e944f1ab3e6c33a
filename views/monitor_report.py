"""The monitoring report: one self-contained HTML page per tenant, with its charts inline (SVG).

Charts per model version: global importance over time, nDCG against its threshold, coverage and
p99 latency, and the features that moved (attribution JS divergence against its threshold).
Inline SVG with text kept as text, so the page needs nothing from elsewhere and a browser test
can find each chart's elements. Everything shown comes from one tenant's MonitorReport.
"""

from __future__ import annotations

import io
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from whylake.monitor.evaluate import DayReport, MonitorReport

TOP_FEATURES = 6
_COLORS = ("#1c7ed6", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285")


def write_monitor_report(report: MonitorReport, path: str | Path) -> Path:
    """Write the report to `path` (UTF-8) and return it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_monitor_html(report), encoding="utf-8")
    return target


def render_monitor_html(report: MonitorReport) -> str:
    """The report as one HTML string."""
    by_model: dict[tuple[str, str], list[DayReport]] = defaultdict(list)
    for day in report.days:
        by_model[(day.figures.model_id, day.figures.model_version)].append(day)
    sections = [_header(report), _alerts(report)]
    for (model_id, version), days in sorted(by_model.items()):
        days.sort(key=lambda d: d.figures.day)
        sections.append(f"<h2>Model <code>{_e(model_id)}</code> version {_e(version)}</h2>")
        sections.append(_table(days))
        sections.append('<div class="charts">')
        sections.append(_figure("importance", "Global importance over time", _importance(days)))
        sections.append(_figure("ndcg", "nDCG against its threshold", _ndcg(days, report)))
        sections.append(_figure("coverage-latency", "Coverage and p99 latency", _sli(days)))
        sections.append(_figure("moved", "Features that moved", _moved(days, report)))
        sections.append("</div>")
    body = "\n".join(s for s in sections if s)
    title = f"whylake monitoring: {report.tenant_id}"
    return _PAGE.format(title=_e(title), css=_CSS, body=body)


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def _header(report: MonitorReport) -> str:
    days = sorted({d.figures.day for d in report.days})
    span = f"{days[0]} to {days[-1]}" if days else "no data"
    return (
        f"<header><h1>Explanation monitoring for tenant <b>{_e(report.tenant_id)}</b></h1>"
        f'<p class="sub">{_e(span)} · settings {_e(report.config_version)} '
        f"(<code>{_e(report.config_hash[:12])}</code>) · explanations snapshot "
        f"<code>{_e(report.explanations_snapshot_id)}</code> · evaluated "
        f"{_e(report.evaluated_at.isoformat(timespec='seconds'))}</p></header>"
    )


def _alerts(report: MonitorReport) -> str:
    if not report.alerts:
        return '<section class="alerts none"><h2>Alerts</h2><p>No alert fired.</p></section>'
    items = []
    for a in report.alerts:
        examples = "".join(
            f"<li><code>whylake reconstruct --tenant {_e(a['tenant_id'])} --request-id "
            f"{_e(r)}</code></li>"
            for r in a["example_request_ids"]
        )
        items.append(
            f'<li class="alert {_e(a["severity"])}"><b>{_e(a["severity"])}</b> '
            f"{_e(a['kind'])}{' / ' + _e(a['slo']) if a['slo'] else ''}: {_e(a['summary'])}"
            f"{'<ul class=examples>' + examples + '</ul>' if examples else ''}</li>"
        )
    return f'<section class="alerts"><h2>Alerts</h2><ul>{"".join(items)}</ul></section>'


def _table(days: list[DayReport]) -> str:
    head = (
        "<tr><th>day</th><th>records</th><th>explained</th><th>coverage</th>"
        "<th>p99 latency</th><th>error rate</th><th>cost / expl.</th><th>nDCG (p)</th>"
        "<th>drift</th><th>moved</th></tr>"
    )
    rows = []
    for day in days:
        f, d = day.figures, day.drift
        ndcg = "—" if d is None or d.verdict != "tested" else f"{d.ndcg:.3f} ({d.ndcg_p_value:.3g})"
        alert = d is not None and d.alert
        rows.append(
            f"<tr class={'drift' if alert else 'ok'}><td>{_e(f.day)}</td>"
            f"<td>{f.counts['records']:,}</td><td>{f.counts['explained']:,}</td>"
            f"<td>{_pct(f.coverage)}</td><td>{_num(f.latency_p99_s, ',.0f')} s</td>"
            f"<td>{_pct(f.error_rate)}</td><td>{_num(f.cost_per_explanation_s)} s</td>"
            f"<td>{ndcg}</td><td>{'ALERT' if alert else 'ok'}</td>"
            f"<td>{_e(', '.join(d.top_moved_features) if d else '')}</td></tr>"
        )
    return f'<table class="days">{head}{"".join(rows)}</table>'


def _figure(name: str, caption: str, svg: str) -> str:
    return (
        f'<figure class="chart" data-chart="{_e(name)}">{svg}'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _svg(fig: Figure) -> str:
    out = io.StringIO()
    FigureCanvasSVG(fig).print_svg(out)
    text = out.getvalue()
    return text[text.index("<svg") :]


def _new_figure() -> Figure:
    fig = Figure(figsize=(5.6, 3.0), dpi=100, layout="constrained")
    return fig


_RC = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}


def _importance(days: list[DayReport]) -> str:
    with rc_context(_RC):
        fig = _new_figure()
        ax = fig.add_subplot()
        measured = [d for d in days if d.importance is not None]
        if measured:
            last = measured[-1].importance
            assert last is not None
            # The features that mattered most on any day: one that collapsed stays in view.
            peak = np.max([d.importance.value for d in measured if d.importance], axis=0)
            top = sorted(range(len(last.features)), key=lambda j: -peak[j])[:TOP_FEATURES]
            x = [d.figures.day.isoformat() for d in measured]
            for color, j in zip(_COLORS, top, strict=False):
                y = [float(d.importance.value[j]) for d in measured if d.importance is not None]
                se = [float(d.importance.std_error[j]) for d in measured if d.importance]
                ax.errorbar(x, y, yerr=se, marker="o", color=color, capsize=3,
                            label=last.features[j])  # fmt: skip
            ax.legend(fontsize=7, loc="upper left", frameon=False)
        ax.set_ylabel("mean |attribution| (HT, ± 1 s.e.)")
        return _svg(fig)


def _ndcg(days: list[DayReport], report: MonitorReport) -> str:
    with rc_context(_RC):
        fig = _new_figure()
        ax = fig.add_subplot()
        tested = [d for d in days if d.drift is not None and d.drift.verdict == "tested"]
        x = [d.figures.day.isoformat() for d in tested]
        y = [d.drift.ndcg for d in tested if d.drift is not None]
        colors = ["#e03131" if d.drift and d.drift.alert else "#1c7ed6" for d in tested]
        ax.plot(x, y, color="#868e96", linewidth=1)
        ax.scatter(x, y, c=colors, zorder=3, label="nDCG (red: drift alert)")
        threshold = report.settings.drift.ndcg_threshold
        ax.axhline(threshold, color="#e03131", linestyle="--", label=f"threshold {threshold:g}")
        ax.set_ylim(min([threshold - 0.1, *y]) if y else 0, 1.01)
        ax.legend(fontsize=7, loc="lower left", frameon=False)
        ax.set_ylabel("nDCG vs reference")
        return _svg(fig)


def _sli(days: list[DayReport]) -> str:
    with rc_context(_RC):
        fig = _new_figure()
        ax = fig.add_subplot()
        x = [d.figures.day.isoformat() for d in days]
        coverage = [100 * (d.figures.coverage or 0.0) for d in days]
        ax.bar(x, coverage, color="#74c0fc", label="coverage %")
        ax.set_ylabel("coverage (% of records explained)")
        twin = ax.twinx()
        latency = [(d.figures.latency_p99_s or 0.0) / 3600 for d in days]
        twin.plot(x, latency, color="#d9480f", marker="s", label="p99 latency (h)")
        twin.set_ylabel("p99 event -> commit (hours)")
        handles = ax.get_legend_handles_labels()
        twin_handles = twin.get_legend_handles_labels()
        ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=7,
                  loc="upper left", frameon=False)  # fmt: skip
        return _svg(fig)


def _moved(days: list[DayReport], report: MonitorReport) -> str:
    with rc_context(_RC):
        fig = _new_figure()
        ax = fig.add_subplot()
        tested = [d for d in days if d.drift is not None and d.drift.verdict == "tested"]
        alerted = [d for d in tested if d.drift is not None and d.drift.alert]
        shown = (alerted or tested)[-1:] if tested else []
        if shown and shown[0].drift is not None:
            drift = shown[0].drift
            features = sorted(drift.features, key=lambda f: -f.attribution_js)[:10]
            names = [f.feature for f in features][::-1]
            values = [f.attribution_js for f in features][::-1]
            colors = ["#e03131" if f.moved else "#adb5bd" for f in features][::-1]
            ax.barh(names, values, color=colors)
            limit = report.settings.drift.attribution_threshold
            ax.axvline(limit, color="#e03131", linestyle="--", label=f"threshold {limit:g}")
            ax.set_title(f"{shown[0].figures.day} (red: moved, beyond sampling noise)", fontsize=8)
            ax.legend(fontsize=7, loc="lower right", frameon=False)
        ax.set_xlabel("JS divergence of the attribution distribution vs reference")
        return _svg(fig)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;color:#212529;padding:0 1rem}
h1{font-size:1.4rem;margin:0}h2{font-size:1.1rem;margin-top:1.6rem}
.sub{color:#495057;font-size:.9rem}code{background:#f1f3f5;padding:0 .25rem;border-radius:3px}
table.days{border-collapse:collapse;width:100%;font-size:.85rem}
table.days td,table.days th{border-bottom:1px solid #dee2e6;padding:.3rem .5rem;text-align:right}
table.days tr.drift td{background:#fff5f5;color:#c92a2a;font-weight:600}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1rem}
figure.chart{margin:0;border:1px solid #dee2e6;border-radius:6px;padding:.5rem}
figure.chart svg{width:100%;height:auto}figcaption{font-size:.85rem;color:#495057}
.alerts li.page{color:#c92a2a}.alerts li.ticket{color:#e67700}.examples{font-size:.8rem}
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{css}</style></head>
<body>
{body}
</body></html>
"""
