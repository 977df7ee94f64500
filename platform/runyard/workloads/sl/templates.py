"""Render a linear classifier's weights as images: row c of W, reshaped to the input image,
is the template that class c scores against."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_template_grid(weight: np.ndarray, image_shape: tuple[int, int, int],
                       class_names: list[str], path: Path, max_classes: int = 100) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(len(weight), max_classes)
    cols = min(10, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.35), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= count:
            continue
        template = weight[index].reshape(image_shape)
        # Each template is stretched to the full display range on its own, as in the seed.
        low, high = template.min(), template.max()
        template = (template - low) / (high - low + 1e-12)
        ax.imshow(template.squeeze(-1) if image_shape[2] == 1 else template, cmap="gray")
        ax.set_title(class_names[index], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
