"""Pictures of a sweep: objective vs each hyperparameter, learning curves of the best configs,
and a parallel-coordinates view — written into a directory, from data already read back.

Pure functions: they take `config_summaries` rows (runyard.tracking.results), the search
space, and metric histories, and write files; they make no MLflow call, so they are tested
and reused without a tracking store. Matplotlib draws off-screen (Agg). The parallel
coordinates are one self-contained HTML file: inline SVG and a few lines of script, nothing
fetched from the network, so it opens anywhere, offline, as an MLflow artifact.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the off-screen backend)

if TYPE_CHECKING:
    from runyard.tracking.results import ConfigSummary

OBJECTIVE_FILE = "objective_vs_hyperparameters.png"
CURVES_FILE = "learning_curves.png"
PARALLEL_FILE = "parallel_coordinates.html"


def number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def category_order(values: list[Any]) -> list[str]:
    """Distinct values as text, numbers in numeric order (32 before 128), then the rest."""
    return sorted({str(v) for v in values},
                  key=lambda text: (number(text) is None, number(text) or 0.0, text))


def objective_vs_hyperparameters(rows: list[ConfigSummary], space: dict[str, str], metric: str,
                                 path: Path) -> Path:
    """One subplot per search dimension: each config's objective (the mean over its seeds,
    with ± one standard deviation when it ran on several) against its value there. Log x-axis
    for loguniform dimensions; categories for choice/grid ones."""
    keys = list(space)
    columns = min(3, len(keys))
    lines = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines),
                                squeeze=False)
    for key, axis in zip(keys, axes.flat):
        kind = space[key]
        values = [row.params.get(key) for row in rows]
        numeric = [number(v) for v in values]
        if kind in ("choice", "grid") or any(v is None for v in numeric):
            categories = category_order(values)
            xs = [categories.index(str(v)) for v in values]
            axis.set_xticks(range(len(categories)), categories, rotation=30, fontsize=8)
        else:
            xs = numeric
            if kind == "loguniform":
                log_axis(axis, xs)
        ys = [row.value for row in rows]
        spread = [row.std for row in rows]
        if any(row.seeds > 1 for row in rows):
            axis.errorbar(xs, ys, yerr=spread, fmt="o", markersize=4, capsize=3, alpha=0.8)
        else:
            axis.plot(xs, ys, "o", markersize=4, alpha=0.8)
        if rows:
            axis.plot([xs[0]], [ys[0]], "*", color="crimson", markersize=13, label="best")
            axis.legend(loc="best", fontsize=8)
        axis.set_xlabel(key.removeprefix("config."))
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys):]:
        axis.set_visible(False)
    seeds = max((row.seeds for row in rows), default=1)
    figure.suptitle(f"{metric} per config" + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def log_axis(axis: Any, values: list[float]) -> None:
    """A log x-axis labelled 0.1, 0.2, 0.5, ... across a narrow range (under two decades),
    at powers of ten across a wide one; never the overlapping 3x10^-1 of minor labels."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_xscale("log")
    positive = [v for v in values if v > 0]
    narrow = bool(positive) and max(positive) / min(positive) < 100
    axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    axis.xaxis.set_minor_formatter(NullFormatter())


def learning_curves(curves: dict[str, list[list[tuple[int, float]]]], metric: str,
                    path: Path) -> Path:
    """`curves`: config label -> one [(iteration, value), ...] series per seed. Each config
    gets one colour: its seed-mean per iteration as a line, single seeds faint behind it."""
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.get_cmap("tab10")
    for rank, (label, series) in enumerate(curves.items()):
        colour = colours(rank % 10)
        by_step: dict[int, list[float]] = {}
        for points in series:
            if len(series) > 1 and points:
                axis.plot(*zip(*points), color=colour, alpha=0.25, linewidth=0.8)
            for step, value in points:
                by_step.setdefault(step, []).append(value)
        steps = sorted(by_step)
        axis.plot(steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], color=colour,
                  linewidth=1.8, label=f"#{rank + 1} {label}"[:60])
    axis.set_xlabel("iteration")
    axis.set_ylabel(metric)
    axis.set_title(f"learning curves of the top {len(curves)} configs")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def parallel_coordinates(rows: list[ConfigSummary], space: dict[str, str], metric: str,
                         mode: str, path: Path) -> Path:
    """A self-contained HTML page: one vertical axis per hyperparameter and one for the
    objective; each config a polyline coloured from worst (blue) to best (red). Hovering a
    line shows its config."""
    width, height, margin = 960, 420, 60
    axes_keys = list(space) + [metric]
    step = (width - 2 * margin) / max(1, len(axes_keys) - 1)
    ys_of: dict[str, list[float]] = {}
    ticks: dict[str, list[tuple[float, str]]] = {}
    for key in axes_keys:
        raw = [row.value if key == metric else row.params.get(key) for row in rows]
        ys_of[key], ticks[key] = _axis_positions(raw, space.get(key, "uniform"), height, margin)
    values = [row.value for row in rows]
    low, high = min(values, default=0.0), max(values, default=1.0)

    def colour(value: float) -> str:
        share = 0.5 if high == low else (value - low) / (high - low)
        share = share if mode == "max" else 1 - share
        return f"rgb({int(40 + 215 * share)},{int(90 - 40 * share)},{int(230 - 200 * share)})"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" '
             'font-family="sans-serif" font-size="11">']
    order = sorted(range(len(rows)), key=lambda i: values[i], reverse=(mode != "max"))
    for i in order:  # worst first, so the best lines are drawn on top
        points = " ".join(f"{margin + a * step:.1f},{ys_of[k][i]:.1f}" for a, k in enumerate(axes_keys))
        title = html.escape(f"{rows[i].label}  →  {metric} = {values[i]:.4g}")
        parts.append(f'<polyline class="config" points="{points}" fill="none" '
                     f'stroke="{colour(values[i])}" stroke-width="1.6" stroke-opacity="0.75">'
                     f'<title>{title}</title></polyline>')
    for a, key in enumerate(axes_keys):
        x = margin + a * step
        parts.append(f'<line x1="{x:.1f}" y1="{margin}" x2="{x:.1f}" y2="{height - margin}" '
                     'stroke="#333"/>')
        name = html.escape(key.removeprefix("config."))
        parts.append(f'<text x="{x:.1f}" y="{margin - 18}" text-anchor="middle" '
                     f'font-weight="bold">{name}</text>')
        for y, text in ticks[key]:
            parts.append(f'<text x="{x + 4:.1f}" y="{y + 4:.1f}" fill="#555">{html.escape(text)}</text>')
    parts.append(f'<text x="{margin}" y="{height + 20}">{len(rows)} configs; colour: '
                 f'{metric} from worst (blue) to best (red); hover a line for its config</text>')
    parts.append("</svg>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(metric)}: parallel coordinates</title><style>"
            "polyline.config:hover{stroke-width:4;stroke-opacity:1}</style></head><body>"
            + "".join(parts)
            # Hovering a line raises it above the others (SVG paints in document order).
            + "<script>document.querySelectorAll('polyline.config').forEach(function (line) {"
              "line.addEventListener('mouseenter', function () {"
              "line.parentNode.appendChild(line); });});</script></body></html>")
    path.write_text(page)
    return path


def _axis_positions(raw: list[Any], kind: str, height: int, margin: int
                    ) -> tuple[list[float], list[tuple[float, str]]]:
    """Pixel y of each value on its axis (top = largest), and a few labelled ticks."""
    top, bottom = margin, height - margin
    numeric = [number(v) for v in raw]
    if kind in ("choice", "grid") or any(v is None for v in numeric):
        categories = category_order(raw)
        gap = (bottom - top) / max(1, len(categories) - 1)
        where = {c: bottom - i * gap if len(categories) > 1 else (top + bottom) / 2
                 for i, c in enumerate(categories)}
        return [where[str(v)] for v in raw], [(where[c], c) for c in categories]
    log = kind == "loguniform" and all(v > 0 for v in numeric)
    scaled = [math.log10(v) if log else v for v in numeric]
    low, high = min(scaled, default=0.0), max(scaled, default=1.0)
    span = (high - low) or 1.0

    def y(value: float) -> float:
        return bottom - (value - low) / span * (bottom - top) if high != low else (top + bottom) / 2

    tick_values = [low + span * i / 4 for i in range(5)] if high != low else [low]
    labels = [(y(t), f"{10 ** t if log else t:.3g}") for t in tick_values]
    return [y(v) for v in scaled], labels


def sweep_plots(rows: list[ConfigSummary], space: dict[str, str], metric: str, mode: str,
                curves: dict[str, list[list[tuple[int, float]]]], directory: Path) -> list[Path]:
    """All three views of a sweep into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if rows and space:
        written.append(objective_vs_hyperparameters(rows, space, metric, directory / OBJECTIVE_FILE))
        written.append(parallel_coordinates(rows, space, metric, mode, directory / PARALLEL_FILE))
    if curves:
        written.append(learning_curves(curves, metric, directory / CURVES_FILE))
    return written


def lineage_plot(histories: dict[str, list[tuple[int, float]]],
                 exploits: list[tuple[str, int, str, int]], colour: str, path: Path) -> None:
    """A population-based sweep's family tree: a row per member (`histories`: member ->
    [(step, value of the hyperparameter `colour`)]), its points coloured by that value, and
    an arrow per exploit (member, iteration, donor, donor's iteration) from the donor's row
    at the checkpoint it gave to the member's row where it went on. Rows bottom up in the
    order of `histories`."""
    from matplotlib.colors import LogNorm, Normalize

    members = list(histories)
    row = {member: index for index, member in enumerate(members)}
    values = [value for history in histories.values() for _, value in history]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    scale = LogNorm(low, high) if low > 0 and high > 10 * low else Normalize(low, high)
    figure, axes = plt.subplots(figsize=(9, 1.5 + 0.45 * len(members)))
    points = None
    for member, history in histories.items():
        if history:
            steps, shown = zip(*sorted(history))
            points = axes.scatter(steps, [row[member]] * len(steps), c=shown, cmap="viridis",
                                  norm=scale, s=14)
    for member, iteration, donor, donor_iteration in exploits:
        if member in row and donor in row:
            axes.annotate("", xy=(iteration + 0.5, row[member]),
                          xytext=(donor_iteration, row[donor]), arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 0.8})
    if points is not None:
        figure.colorbar(points, ax=axes, label=colour)
    axes.set_yticks(range(len(members)), members)
    axes.set_xlabel("iteration")
    axes.set_title(f"members over iterations, coloured by {colour}; an arrow per exploit "
                   "(donor's checkpoint -> member)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
