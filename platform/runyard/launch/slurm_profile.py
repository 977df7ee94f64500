"""A Slurm profile: defaults for `runyard submit | resume --slurm`, so that a lab writes its
partition, account, setup lines... once instead of on every command.

    # ~/.config/runyard/slurm.yaml (or --slurm-profile FILE)
    partition: gpu
    account: lab42
    time: "04:00:00"
    gpus-per-node: 1
    setup: |
      module load cuda/12.4
      source ~/venvs/runyard/bin/activate

Its keys are the Slurm flags' names without the dashes; a flag given on the command line wins
over the profile. The file is read with every value as text (then converted per field), so YAML
never turns `time: 01:30:00` into a number of seconds.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from runyard.errors import UserError
from runyard.launch.slurm import SlurmOptions
from runyard.paths import user_config_dir

PROFILE_NAME = "slurm.yaml"
# key in the file -> (SlurmOptions field, whole number?, an example value)
FIELDS = {"nodes": ("nodes", True, "2"), "partition": ("partition", False, "gpu"),
          "account": ("account", False, "lab42"), "qos": ("qos", False, "normal"),
          "time": ("time", False, '"04:00:00"'), "gpus-per-node": ("gpus_per_node", False, "1"),
          "cpus-per-node": ("cpus_per_node", True, "8"), "mem": ("mem", False, "16G"),
          "setup": ("setup", False, '"source ~/venv/bin/activate"'), "stop-lead": ("stop_lead_s", True, "120")}


def default_path() -> Path:
    """The user's profile, used when it exists and no --slurm-profile is given."""
    return user_config_dir() / PROFILE_NAME


def read(path: Path) -> dict[str, object]:
    """The profile's values as SlurmOptions fields; UserError naming the file, the field and
    the fix when the file is missing, not YAML, or has an unknown key or a wrong value."""
    if not path.is_file():
        raise UserError(f"--slurm-profile: {path} does not exist (or is not a file); give the path of a "
                        f"YAML file of Slurm defaults, e.g. `partition: gpu`.")
    try:
        loaded = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error}); fix the file.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping of field: value (e.g. `partition: gpu`), "
                        f"found a {type(loaded).__name__}; fix the file.")
    values: dict[str, object] = {}
    for key, text in loaded.items():
        if key not in FIELDS:
            near = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise UserError(f"{path}: unknown field {key!r}; {hint}known fields: {', '.join(FIELDS)}.")
        field, whole, example = FIELDS[key]
        if not isinstance(text, str):
            raise UserError(f"{path}: field {key!r} is a {type(text).__name__}; expected a single value "
                            f"(e.g. `{key}: {example}`); fix the file.")
        value: object = text
        if whole:
            try:
                value = int(text)
            except ValueError:
                raise UserError(f"{path}: field {key!r} is {text!r}; expected a whole number "
                                f"(e.g. `{key}: {example}`); fix the file.") from None
        try:
            SlurmOptions(**{"nodes": 1, field: value}).check()
        except UserError as error:
            raise UserError(f"{path}: field {key!r}: {error} Fix the file.") from None
        values[field] = value
    return values


def options(profile: Path | None, given: dict[str, object]) -> SlurmOptions:
    """The job's Slurm request: the flags `given` (SlurmOptions fields) over the profile's
    values (`profile`, else the user's default profile when it exists) over the defaults."""
    path = profile or default_path()
    defaults = read(path) if profile is not None or path.is_file() else {}
    chosen = {**defaults, **given}
    chosen.setdefault("nodes", 1)
    made = SlurmOptions(**chosen)
    made.check()
    return made

