"""Inline SVG charts (histograms and bar charts): no JavaScript, no fonts, no network.

Every label is escaped here, so the returned ``Markup`` is safe to put into an autoescaped
template even when labels come from document text.

Example::

    svg = histogram([12, 40, 41, 77], title="Query length", x_label="characters")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

__all__ = ["bar_chart", "histogram", "integer_bins"]

_FILL = "#3b6ea8"
_TEXT = 'font-family="sans-serif" font-size="11" fill="#333"'


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    t = escape(title)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{t}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{t}</title>"
        f'<text x="4" y="14" {_TEXT} font-weight="bold">{t}</text>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _empty(title: str, width: int) -> Markup:
    return _svg(width, 44, title, [f'<text x="4" y="34" {_TEXT}>no data</text>'])


def integer_bins(values: Sequence[int], bins: int = 12) -> list[tuple[int, int, int]]:
    """``(low, high, count)`` bins over integers; one bin per value when few distinct values."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / bins))
    n = math.ceil((hi - lo + 1) / width)
    counts = [0] * n
    for v in values:
        counts[(v - lo) // width] += 1
    return [(lo + i * width, lo + (i + 1) * width - 1, c) for i, c in enumerate(counts)]


def histogram(
    values: Sequence[int],
    *,
    title: str,
    x_label: str = "",
    bins: int = 12,
    width: int = 360,
    height: int = 190,
) -> Markup:
    """A vertical-bar histogram of integer ``values`` (count on hover via ``<title>``)."""
    data = integer_bins(values, bins)
    if not data:
        return _empty(title, width)
    left, top, bottom = 34, 22, 34
    plot_w, plot_h = width - left - 8, height - top - bottom
    peak = max(c for _, _, c in data)
    bar_w = plot_w / len(data)
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" stroke="#888"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" {_TEXT}>{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" {_TEXT}>0</text>',
    ]
    for i, (lo, hi, c) in enumerate(data):
        h = plot_h * c / peak
        x = left + i * bar_w
        label = str(lo) if lo == hi else f"{lo}–{hi}"
        body.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{_FILL}"><title>{escape(label)}: {c}</title></rect>'
        )
    first, last = data[0][0], data[-1][1]
    body.append(f'<text x="{left}" y="{top + plot_h + 13}" {_TEXT}>{first}</text>')
    body.append(
        f'<text x="{width - 8}" y="{top + plot_h + 13}" text-anchor="end" {_TEXT}>{last}</text>'
    )
    if x_label:
        body.append(
            f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle" {_TEXT}>'
            f"{escape(x_label)} (n={len(values)})</text>"
        )
    return _svg(width, height, title, body)


def bar_chart(
    items: Sequence[tuple[str, float]], *, title: str, width: int = 360, label_w: int = 130
) -> Markup:
    """Horizontal bars, one per ``(label, value)``, with the value written beside each bar."""
    if not items:
        return _empty(title, width)
    row, top = 18, 22
    height = top + row * len(items) + 6
    peak = max((v for _, v in items), default=0) or 1
    plot_w = width - label_w - 56
    body = []
    for i, (label, value) in enumerate(items):
        y = top + i * row
        w = plot_w * value / peak
        shown = escape(label if len(label) <= 22 else label[:21] + "…")
        num = f"{value:g}" if isinstance(value, float) else str(value)
        body.append(
            f'<text x="{label_w - 4}" y="{y + 12}" text-anchor="end" {_TEXT}>{shown}'
            f"<title>{escape(label)}</title></text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{max(w, 0.5):.1f}" height="{row - 5}" '
            f'fill="{_FILL}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" {_TEXT}>{num}</text>'
        )
    return _svg(width, height, title, body)
