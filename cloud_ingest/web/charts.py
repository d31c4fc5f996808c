"""Inline SVG charts drawn on the server: no scripts, no external assets, readable offline.

Every mark carries its numbers three ways: a visible <text> label where there is room, a <title>
(the browser's tooltip, read by screen readers) and data-* attributes with the unrounded values,
so that a test or a script can check the chart against the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from html import escape

from markupsafe import Markup

from cloud_ingest.evidence import MachineComparison
from cloud_ingest.store import GapReport
from cloud_ingest.web.data import DayPoint, StateRow
from edgeproof.contract import MACHINE_STATES

FONT = 'font-family="sans-serif" font-size="11"'
BASELINE_COLOUR, POST_COLOUR = "#9db9d6", "#2f5d8a"
SERIES_COLOURS = {"networking_rate": "#2f5d8a", "oee": "#d9822b"}
STATE_COLOURS = {
    "RUNNING": "#2da44e",
    "SETUP": "#8250df",
    "MICRO_STOP": "#d4a72c",
    "IDLE": "#8c959f",
    "FAULT": "#cf222e",
    "PLANNED_STOP": "#0969da",
    "NOT_SCHEDULED": "#d0d7de",
    "UNKNOWN": "#f6f8fa",
}
GAP_COLOURS = {
    "received": "#2da44e",
    "evicted": "#d4a72c",
    "missing": "#cf222e",
    "pending": "#8250df",
    "rejected": "#6e2b2b",
}


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _a(text: object) -> str:
    return escape(str(text), quote=True)


def _svg(width: int, height: int, label: str, body: list[str], kind: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{_a(kind)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{_a(label)}" {FONT}>'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    out = []
    for name, colour in items:
        out.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{colour}" stroke="#57606a" '
            f'stroke-width="0.5"/><text x="{x + 14:.1f}" y="{y:.1f}">{escape(name)}</text>'
        )
        x += 22 + 7 * len(name) + (6 * sum(1 for c in name if ord(c) > 0x2E80))
    return out


def series_chart(days: list[DayPoint], t: dict[str, str]) -> Markup:
    """Daily networking rate and OEE, 0–100 %, one point per plant-local day with buckets."""
    width, height, left, right, top, bottom = 760, 260, 46, 16, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    body = _legend(
        [(t["networking_rate"], SERIES_COLOURS["networking_rate"]), (t["oee"], SERIES_COLOURS["oee"])], left, 14
    )
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick * 100:.0f}%</text>'
        )
    n = len(days)
    step = plot_w / max(n, 1)
    xs = [left + step * (i + 0.5) for i in range(n)]
    label_every = max(1, n // 12)
    for i, d in enumerate(days):
        if i % label_every == 0:
            body.append(
                f'<text x="{xs[i]:.1f}" y="{height - bottom + 16}" text-anchor="middle">{d.day.isoformat()}</text>'
            )
    show_values = n <= 20
    for key in ("networking_rate", "oee"):
        colour = SERIES_COLOURS[key]
        points = [(xs[i], getattr(d, key), d) for i, d in enumerate(days)]
        path = " ".join(f"{x:.1f},{top + plot_h * (1 - min(v, 1.0)):.1f}" for x, v, _ in points if v is not None)
        if path:
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" data-series="{key}"/>'
            )
        for x, v, d in points:
            if v is None:
                continue
            y = top + plot_h * (1 - min(v, 1.0))
            extra = (
                f' data-numerator="{d.networked}" data-denominator="{d.machines}"' if key == "networking_rate" else ""
            )
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}" data-series="{key}" '
                f'data-day="{d.day.isoformat()}" data-value="{_num(v)}" data-buckets="{d.buckets}"{extra}>'
                f"<title>{escape(t[key])} {d.day.isoformat()}: {pct(v)}</title></circle>"
            )
            if show_values:
                dy = -7 if key == "networking_rate" else 14
                body.append(
                    f'<text x="{x:.1f}" y="{y + dy:.1f}" text-anchor="middle" fill="{colour}" '
                    f'data-series="{key}" data-day="{d.day.isoformat()}">{pct(v)}</text>'
                )
    return _svg(width, height, t["chart_series"], body, "series")


def oee_chart(machines: list[MachineComparison], t: dict[str, str]) -> Markup:
    """Per machine, A / P / Q / OEE as bars: baseline (light) above post (dark), value at the bar's end."""
    metrics = ("availability", "performance", "quality", "oee")
    width, left, bar_w, bar_h = 760, 150, 480, 8
    row_h = 2 * bar_h + 4
    block_h = len(metrics) * row_h + 14
    height = 30 + block_h * max(len(machines), 1)
    body = _legend([(t["baseline"], BASELINE_COLOUR), (t["post"], POST_COLOUR)], left, 14)
    scale = max(
        [1.0]
        + [getattr(getattr(m, w), k).value or 0.0 for m in machines for w in ("baseline", "post") for k in metrics]
    )
    y = 28
    for m in machines:
        body.append(f'<text x="4" y="{y + 10}" font-weight="bold">{escape(m.machine_id)}</text>')
        if m.name:
            body.append(f'<text x="4" y="{y + 24}" fill="#57606a">{escape(m.name[:22])}</text>')
        for k in metrics:
            body.append(f'<text x="{left - 6}" y="{y + bar_h + 3}" text-anchor="end">{escape(t[k])}</text>')
            for j, (window, colour) in enumerate((("baseline", BASELINE_COLOUR), ("post", POST_COLOUR))):
                ratio = getattr(getattr(m, window), k)
                by = y + j * (bar_h + 1)
                w = 0.0 if ratio.value is None else bar_w * ratio.value / scale
                body.append(
                    f'<rect x="{left}" y="{by}" width="{w:.1f}" height="{bar_h}" fill="{colour}" '
                    f'data-machine="{_a(m.machine_id)}" data-metric="{k}" data-window="{window}" '
                    f'data-value="{_num(ratio.value)}" data-numerator="{_num(ratio.numerator)}" '
                    f'data-denominator="{_num(ratio.denominator)}"><title>{escape(m.machine_id)} {escape(t[k])} '
                    f"{escape(t[window])}: {pct(ratio.value)}</title></rect>"
                    f'<text x="{left + w + 4:.1f}" y="{by + bar_h - 1}" font-size="9" '
                    f'data-machine="{_a(m.machine_id)}" '
                    f'data-metric="{k}" data-window="{window}">{pct(ratio.value)}</text>'
                )
            y += row_h
        y += 14
    return _svg(width, height, t["chart_oee"], body, "oee")


def _hhmm(t: datetime, zone: tzinfo) -> str:
    return t.astimezone(zone).strftime("%m-%d %H:%M")


def timeline_chart(
    machines: list[str],
    intervals: list[StateRow],
    start: datetime,
    end: datetime,
    zone: tzinfo,
    t: dict[str, str],
    window: str,
) -> Markup:
    """One row per machine over [start, end): a coloured span per stored state interval; blank = no interval."""
    width, left, right, row_h = 760, 90, 16, 20
    plot_w = width - left - right
    height = 58 + row_h * max(len(machines), 1) + 24
    span = (end - start).total_seconds() or 1.0
    body = [
        f'<text x="4" y="12" font-weight="bold">{escape(t[window])}</text>',
        f'<text x="{left}" y="{height - 28}" data-edge="start">{_hhmm(start, zone)}</text>',
        f'<text x="{width - right}" y="{height - 28}" text-anchor="end" data-edge="end">{_hhmm(end, zone)}</text>',
    ]
    for i, machine in enumerate(machines):
        y = 22 + i * row_h
        body.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(machine)}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{plot_w}" height="{row_h - 4}" fill="#ffffff" stroke="#d0d7de"/>'
        )
        for iv in (iv for iv in intervals if iv.machine_id == machine):
            x = left + plot_w * (iv.start - start).total_seconds() / span
            w = max(plot_w * (iv.end - iv.start).total_seconds() / span, 0.5)
            seconds = (iv.end - iv.start).total_seconds()
            reason = f" {iv.reason}" if iv.reason else ""
            body.append(
                f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row_h - 4}" '
                f'fill="{STATE_COLOURS.get(iv.state, "#000")}" '
                f'data-machine="{_a(machine)}" data-state="{_a(iv.state)}" data-start="{iv.start.isoformat()}" '
                f'data-end="{iv.end.isoformat()}" data-seconds="{seconds:g}" data-seq="{iv.seq}" '
                f'data-window="{window}">'
                f"<title>{escape(machine)} {escape(t.get('state_' + iv.state, iv.state))} {_hhmm(iv.start, zone)}–"
                f"{_hhmm(iv.end, zone)} ({seconds / 60:.1f} min){escape(reason)}</title></rect>"
            )
    legend = [(t[f"state_{s}"], STATE_COLOURS[s]) for s in MACHINE_STATES]
    body += _legend(legend, 4, height - 6)
    return _svg(width, height, f"{t['chart_timeline']} — {t[window]}", body, f"timeline-{window}")


def coverage_chart(machines: list[MachineComparison], t: dict[str, str]) -> Markup:
    """Share of each window with good data, per machine, baseline and post."""
    width, left, bar_w, bar_h = 760, 90, 560, 9
    height = 30 + len(machines) * (2 * bar_h + 10)
    body = _legend([(t["baseline"], BASELINE_COLOUR), (t["post"], POST_COLOUR)], left, 14)
    y = 24
    for m in machines:
        body.append(f'<text x="{left - 6}" y="{y + bar_h + 4}" text-anchor="end">{escape(m.machine_id)}</text>')
        for j, (window, colour) in enumerate((("baseline", BASELINE_COLOUR), ("post", POST_COLOUR))):
            mw = getattr(m, window)
            by = y + j * (bar_h + 1)
            w = 0.0 if mw.coverage is None else bar_w * min(mw.coverage, 1.0)
            body.append(
                f'<rect x="{left}" y="{by}" width="{bar_w}" height="{bar_h}" fill="#f6f8fa"/>'
                f'<rect x="{left}" y="{by}" width="{w:.1f}" height="{bar_h}" fill="{colour}" '
                f'data-machine="{_a(m.machine_id)}" '
                f'data-window="{window}" data-value="{_num(mw.coverage)}" data-observed-s="{_num(mw.observed_s)}">'
                f"<title>{escape(m.machine_id)} {escape(t[window])}: {pct(mw.coverage)}</title></rect>"
                f'<text x="{left + bar_w + 4}" y="{by + bar_h - 1}" font-size="9" data-machine="{_a(m.machine_id)}" '
                f'data-window="{window}">{pct(mw.coverage)}</text>'
            )
        y += 2 * bar_h + 10
    return _svg(width, height, t["chart_coverage"], body, "coverage")


def gaps_chart(report: GapReport, t: dict[str, str]) -> Markup:
    """Sequence numbers 1 … highest as a strip: stored in green, each gap segment in its status's colour."""
    width, left, right = 760, 10, 10
    plot_w = width - left - right
    top = max([report.highest_seq or 0] + [g.last for g in report.gaps]) or 1
    body = [
        f'<rect x="{left}" y="24" width="{plot_w}" height="18" fill="{GAP_COLOURS["received"]}" '
        f'data-received="{report.received}" data-highest="{report.highest_seq or 0}"><title>{escape(t["received"])}: '
        f"{report.received}</title></rect>",
        f'<text x="{left}" y="58">1</text><text x="{width - right}" y="58" text-anchor="end">{top}</text>',
    ]
    for g in report.gaps:
        x = left + plot_w * (g.first - 1) / top
        w = max(plot_w * g.count / top, 2.0)
        label = f"{t['seq']} {g.first}" + (f"–{g.last}" if g.last != g.first else "") + f": {t['gap_' + g.status]}"
        body.append(
            f'<rect x="{x:.1f}" y="24" width="{w:.1f}" height="18" fill="{GAP_COLOURS[g.status]}" '
            f'data-first="{g.first}" data-last="{g.last}" data-count="{g.count}" data-status="{g.status}">'
            f"<title>{escape(label)}</title></rect>"
        )
    legend = [(t["received"], GAP_COLOURS["received"])] + [
        (t[f"gap_{s}"], GAP_COLOURS[s]) for s in ("evicted", "missing", "pending", "rejected")
    ]
    body += _legend(legend, left, 14)
    return _svg(width, 66, t["chart_gaps"], body, "gaps")
