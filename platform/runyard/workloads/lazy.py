"""Modules imported when first used, so that a workload module can be imported for its
schema alone.

`runyard validate` imports a workload's module for its Config, metrics and check_spec, none
of which needs torch; importing torch costs about a second, more than the rest of the
validation together. A workload module therefore writes

    torch = lazy_module("torch")
    F = lazy_module("torch.nn.functional")

instead of `import torch` / `import torch.nn.functional as F`, and uses them as usual inside
its methods. The first attribute read (`torch.zeros`, `F.cross_entropy`) imports the real
module. Anything evaluated when the workload's module itself is imported (a base class
`torch.nn.Module`, a decorator `@torch.no_grad()`) imports it at once, so such code lives in
modules that only setup() imports.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands for the module `name` until an attribute is read, then imports it and takes over
    its namespace (later reads are plain attribute lookups, with no import machinery)."""

    def __getattr__(self, attribute: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(vars(module))
        return getattr(module, attribute)


def lazy_module(name: str) -> Any:
    """The module `name` as imported on first use (the real module if it is imported already)."""
    return sys.modules.get(name) or LazyModule(name)
