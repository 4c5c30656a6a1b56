"""The throughput chart as server-rendered SVG: stacked bars, delivered below rejected."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from scrapy_sdi.dashboard.views import e

if TYPE_CHECKING:
    from scrapy_sdi.dashboard.queries import Throughput

WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40
X_TICKS = 6


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n that is at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover


def svg(chart: Throughput) -> str:
    n = len(chart.delivered)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((d + r for d, r in zip(chart.delivered, chart.rejected, strict=True)), default=0)
    top = nice_ceiling(peak)
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.8)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="throughput-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role=img aria-label="{e(f"{sum(chart.delivered)} delivered and {sum(chart.rejected)} rejected")}">'
    ]
    for frac in (0, 0.5, 1):
        y = TOP + plot_h * (1 - frac)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{e(_label(top * frac))}</text>'
        )
    for i, (delivered, rejected) in enumerate(zip(chart.delivered, chart.rejected, strict=True)):
        if not delivered and not rejected:
            continue
        x = LEFT + i * slot + (slot - bar_w) / 2
        when = _time(chart.start + i * chart.bucket, chart.bucket)
        y = TOP + plot_h
        for count, css in ((delivered, "delivered"), (rejected, "rejected")):
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            parts.append(
                f'<rect class="{css}" x="{x:.2f}" y="{y:.2f}" width="{bar_w:.2f}" height="{h:.2f}">'
                f"<title>{e(when)}: {count} {css}</title></rect>"
            )
    for k in range(X_TICKS + 1):
        i = round(k * (n - 1) / X_TICKS) if n > 1 else 0
        if k and i == round((k - 1) * (n - 1) / X_TICKS):
            continue
        x = LEFT + (i + 0.5) * slot
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">'
            f"{e(_time(chart.start + i * chart.bucket, chart.bucket * n))}</text>"
        )
    parts.append(
        f'<line class="axisline" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>'
    )
    legend_y = HEIGHT - 6
    parts.append(
        f'<rect class="delivered" x="{LEFT}" y="{legend_y - 9}" width="10" height="10"/>'
        f'<text class="axis" x="{LEFT + 14}" y="{legend_y}">delivered</text>'
        f'<rect class="rejected" x="{LEFT + 90}" y="{legend_y - 9}" width="10" height="10"/>'
        f'<text class="axis" x="{LEFT + 104}" y="{legend_y}">rejected</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _label(value: float) -> str:
    return f"{value:g}"


def _time(ts: float, span: float) -> str:
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.strftime("%H:%M" if span <= 86400 else "%m-%d %H:%M")
