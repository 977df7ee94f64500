"""The architectures sl.convnet can build, as plain data, and the spec check on a choice of
one (a module of its own, importing no torch, so a spec is checked without it; nets.py
builds the networks)."""

from __future__ import annotations

RESNET_BLOCKS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
                 50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3]),
                 152: ("bottleneck", [3, 8, 36, 3])}


def check_arch(arch: str, depth: int, stages: int) -> list[str]:
    """Spec problems with an architecture choice, as `field: message` strings."""
    if arch == "resnet":
        if depth not in RESNET_BLOCKS:
            return [f"config.depth: ResNet depth {depth} is not one of {sorted(RESNET_BLOCKS)}"]
        return []
    if (depth - 4) % (2 * stages) or depth < 2 * stages + 4:
        return [f"config.depth: a WideResNet with {stages} stages needs depth = "
                f"{2 * stages}*n + 4 (e.g. {2 * stages + 4}, {4 * stages + 4}, "
                f"{8 * stages + 4}), found {depth}"]
    return []
