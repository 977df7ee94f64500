"""`runyard workloads [NAME]`: which workloads a spec can name, and the config reference of one
(its fields with types, defaults and descriptions, the metrics it reports, the blocks it
reads), generated from the pydantic models."""

from __future__ import annotations

import argparse
import inspect
from typing import TYPE_CHECKING

from runyard.errors import EXIT_OK, UserError

if TYPE_CHECKING:
    from runyard.cli.main import Commands

EPILOG = """\
examples:
  runyard workloads                    # built-in and installed workloads
  runyard workloads sl.linear          # its config fields, metrics and spec blocks
  runyard workloads my_lab.agents:MyAgent

A spec's `workload:` is one of the names listed, `rllib.<ALGO>`, an import path
package.module:Class (looked up in the directory runyard runs from, then in installed
packages), or a name an installed package registers under the entry-point group
runyard.workloads.
"""


def add_commands(commands: Commands) -> None:
    sub = commands.add("workloads", "List workloads, or print one's config reference.", EPILOG,
                       cmd_workloads)
    sub.add_argument("name", nargs="?", metavar="NAME",
                     help="a workload name or import path; omit to list them all")


def cmd_workloads(args: argparse.Namespace) -> int:
    from runyard import workloads

    if args.name is None:
        print(listing(workloads.REGISTRY, workloads.entry_point_names()))
        return EXIT_OK
    try:
        workload_cls = workloads.get(args.name)
    except KeyError:
        raise UserError(f"unknown workload {args.name!r}; `runyard workloads` lists them") from None
    except workloads.WorkloadNotLoadable as error:
        raise UserError(str(error)) from None
    print(reference(args.name, workload_cls))
    return EXIT_OK


def listing(built_in: dict[str, str], installed: dict[str, str]) -> str:
    width = max(len(name) for name in [*built_in, *installed, "rllib.<ALGO>"])
    lines = ["built in:"]
    lines += [f"  {name:<{width}}  {target}" for name, target in sorted(built_in.items())]
    lines.append(f"  {'rllib.<ALGO>':<{width}}  RLlib's algorithm ALGO as a baseline (rllib.PPO, "
                 "rllib.DQN, ...)")
    lines.append("installed (entry-point group runyard.workloads):")
    lines += ([f"  {name:<{width}}  {target}" for name, target in sorted(installed.items())]
              or ["  (none)"])
    lines.append("or any import path package.module:Class; `runyard workloads NAME` describes one")
    return "\n".join(lines)


def reference(name: str, workload_cls: type) -> str:
    from runyard.workloads.blocks import BLOCKS
    from runyard.workloads.reference import field_rows, render_rows

    lines = [f"{name}  ({workload_cls.__module__}:{workload_cls.__qualname__})"]
    # The class's own docstring, else its module's (built-in workloads document themselves
    # there); never the docstring of the Workload base class.
    summary = workload_cls.__dict__.get("__doc__") or inspect.getmodule(workload_cls).__doc__
    summary = inspect.cleandoc(summary) if summary else ""
    if summary:
        lines += [summary.split("\n\n")[0], ""]
    lines.append("config:")
    lines += render_rows(field_rows(workload_cls.Config), indent="  ")
    lines.append("")
    reported = ", ".join(f"{metric} ({direction})" for metric, direction in workload_cls.metrics.items())
    lines.append("metrics (the better direction): "
                 + (reported or "none of its own; a spec names them in its config"))
    for block in (*workload_cls.blocks, "resources"):
        for model in BLOCKS[block]:
            lines.append("")
            lines.append(f"{block}:  {inspect.getdoc(model).splitlines()[0]}")
            lines += render_rows(field_rows(model), indent="  ")
    return "\n".join(lines)
