"""The sweep's pictures, drawn from rows shaped as tracking.results makes them: files that
open (PNG images, an HTML page with no network reference), one line per config, colours and
axes that follow the objective."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

from runyard.tracking.plots import (CURVES_FILE, OBJECTIVE_FILE, PARALLEL_FILE,
                                    parallel_coordinates, sweep_plots)
from runyard.tracking.results import ConfigSummary

SPACE = {"config.lr": "loguniform", "config.momentum": "uniform", "config.batch_size": "choice"}


def make_rows(count: int, seeds: int) -> list[ConfigSummary]:
    """Configs whose objective peaks at lr = 1e-2, with seed noise; best first."""
    rng = np.random.default_rng(0)
    rows = []
    for sample in range(count):
        lr = float(10 ** rng.uniform(-4, 0))
        momentum = float(rng.uniform(0.5, 0.99))
        batch = int(rng.choice([32, 64, 128]))
        values = [1 - (math.log10(lr) + 2) ** 2 / 4 + 0.02 * rng.standard_normal() for _ in range(seeds)]
        rows.append(ConfigSummary(
            sample=sample, trial_id=f"t{sample * seeds:04d}", run_id=f"r{sample}",
            trial_ids=tuple(f"t{sample * seeds + k:04d}" for k in range(seeds)),
            label=f"lr={lr:.3g},momentum={momentum:.3g},batch_size={batch}",
            value=float(np.mean(values)), std=float(np.std(values, ddof=1)) if seeds > 1 else 0.0,
            ci=(0.0, 0.0), seeds=seeds, values=values,
            params={"config.lr": str(lr), "config.momentum": str(momentum),
                    "config.batch_size": str(batch)}))
    return sorted(rows, key=lambda row: row.value, reverse=True)


def test_all_three_views_are_written_and_open(tmp_path: Path):
    rows = make_rows(24, seeds=3)
    curves = {row.label: [[(step, row.value * (1 - 0.5 ** step)) for step in range(1, 11)]
                             for _ in range(3)] for row in rows[:5]}
    written = sweep_plots(rows, SPACE, "val_top1", "max", curves, tmp_path / "plots")
    assert sorted(p.name for p in written) == sorted([OBJECTIVE_FILE, CURVES_FILE, PARALLEL_FILE])
    for name in (OBJECTIVE_FILE, CURVES_FILE):
        with Image.open(tmp_path / "plots" / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
            # Something was drawn: not a blank canvas.
            assert len(np.unique(np.asarray(image.convert("L")))) > 20
    page = (tmp_path / "plots" / PARALLEL_FILE).read_text()
    assert page.count('<polyline class="config"') == len(rows)
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?:", page)  # self-contained


def test_parallel_coordinates_colour_and_axes_follow_the_objective(tmp_path: Path):
    rows = make_rows(10, seeds=1)
    page = parallel_coordinates(rows, SPACE, "val_top1", "max", tmp_path / "p.html").read_text()
    lines = re.findall(r'points="([^"]+)"[^>]*stroke="rgb\((\d+),(\d+),(\d+)\)"[^>]*>'
                       r'<title>([^<]+)</title>', page)
    assert len(lines) == len(rows)
    best, worst = rows[0], rows[-1]
    by_label = {title.split("  ")[0]: (points, int(red)) for points, red, _, _, title in lines}
    assert by_label[best.label][1] > by_label[worst.label][1]  # best is the reddest
    # The last axis is the objective: the best config sits highest on it (smallest y).
    objective_y = {label: float(points.split()[-1].split(",")[1]) for label, (points, _) in by_label.items()}
    assert objective_y[best.label] == min(objective_y.values())
    assert objective_y[worst.label] == max(objective_y.values())
    # The best lines are drawn last (on top).
    assert lines[-1][4].startswith(best.label)
    # With mode "min" the colours turn around.
    flipped = parallel_coordinates(rows, SPACE, "val_top1", "min", tmp_path / "q.html").read_text()
    reds = {t.split("  ")[0]: int(r) for _, r, _, _, t in re.findall(
        r'points="([^"]+)"[^>]*stroke="rgb\((\d+),(\d+),(\d+)\)"[^>]*><title>([^<]+)</title>', flipped)}
    assert reds[best.label] < reds[worst.label]


def test_nothing_to_draw_writes_nothing(tmp_path: Path):
    assert sweep_plots([], SPACE, "val_top1", "max", {}, tmp_path / "plots") == []
