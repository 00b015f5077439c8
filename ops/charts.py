"""Charts drawn on the server as inline SVG: no script, nothing fetched from anywhere, so the
dashboard's Content-Security-Policy can forbid every external source.

Each chart is an ``<svg class="chart">`` whose marks carry classes (``bar``, ``segment``) and a
``<title>`` naming their figure, so a person hovering and a test reading the page both see the
numbers behind them.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Colour-blind-safe categorical palette (Okabe-Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]

WIDTH = 720
LEFT = 150
RIGHT = 20
ROW = 22
TOP = 10
AXIS = 40


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


def _open(title: str, height: int) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}">'
    )


def _nothing(y: float) -> str:
    return (
        f'<text class="empty" x="{WIDTH / 2:.0f}" y="{y:.0f}" font-size="13" fill="#666" '
        'text-anchor="middle">No data yet</text>'
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _legend(series: Sequence[Series], y: float, palette: Sequence[str] = PALETTE) -> list[str]:
    parts = []
    x = 0.0
    for index, each in enumerate(series):
        colour = palette[index % len(palette)]
        parts.append(
            f'<rect class="legend" x="{x:.0f}" y="{y:.0f}" width="10" height="10" '
            f'fill="{colour}"/><text x="{x + 14:.0f}" y="{y + 9:.0f}" font-size="11">'
            f"{escape(each.name)}</text>"
        )
        x += 24 + 7 * len(each.name)
    return parts


def stacked_columns(
    title: str, labels: Sequence[str], series: Sequence[Series], height: int = 220
) -> SafeString:
    """Columns per label (a day), each stacked from the series (one per member)."""
    plot_w, plot_h = WIDTH - 60 - RIGHT, height - AXIS - TOP
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0))
    slot = plot_w / max(len(labels), 1)
    parts = [
        _open(title, height + 20),
        f"<title>{escape(title)}</title>",
        f'<line x1="60" y1="{TOP + plot_h}" x2="{60 + plot_w}" y2="{TOP + plot_h}" stroke="#999"/>',
        f'<text x="55" y="{TOP + 10}" font-size="11" text-anchor="end">{int(top):,}</text>',
        f'<text x="55" y="{TOP + plot_h}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, label in enumerate(labels):
        x = 60 + i * slot + slot * 0.15
        base = float(TOP + plot_h)
        for index, each in enumerate(series):
            value = each.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            base -= h
            parts.append(
                f'<rect class="bar" data-series="{escape(each.name)}" data-value="{value:g}" '
                f'x="{x:.1f}" y="{base:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[index % len(PALETTE)]}"><title>{escape(each.name)}, '
                f"{escape(label)}: {value:,.0f}</title></rect>"
            )
        parts.append(
            f'<text x="{x + slot * 0.35:.1f}" y="{TOP + plot_h + 14}" font-size="10" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    if not any(totals):
        parts.append(_nothing(height / 2))
    parts += _legend(series, height + 4)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text in it is escaped above


def stacked_bars(
    title: str, labels: Sequence[str], series: Sequence[Series], *, colours: Sequence[str] = ()
) -> SafeString:
    """A horizontal bar per label (a set, a subscription), split into the series' segments."""
    height = TOP + ROW * max(len(labels), 1) + AXIS
    plot_w = WIDTH - LEFT - RIGHT
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0))
    palette = list(colours) or PALETTE
    parts = [
        _open(title, height),
        f"<title>{escape(title)}</title>",
        f'<text x="{WIDTH - RIGHT}" y="{height - AXIS + 14}" font-size="11" '
        f'text-anchor="end">{int(top):,}</text>',
    ]
    for i, label in enumerate(labels):
        y = TOP + i * ROW
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
            f"{escape(label[:24])}</text>"
        )
        x = float(LEFT)
        for index, each in enumerate(series):
            value = each.values[i]
            if value <= 0:
                continue
            w = plot_w * value / top
            parts.append(
                f'<rect class="segment" data-series="{escape(each.name)}" data-value="{value:g}" '
                f'x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW - 6}" '
                f'fill="{palette[index % len(palette)]}"><title>{escape(label)}, '
                f"{escape(each.name)}: {value:,.0f}</title></rect>"
            )
            x += w
    if not any(totals):
        parts.append(_nothing(height / 2))
    parts += _legend(series, height - AXIS + 22, palette)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text in it is escaped above
