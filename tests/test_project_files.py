"""What `runyard submit` ships of a project: its code, not its Python environments, training
output or ignored files; and a project too big to ship is refused naming its largest files.
Checked on a project the test lays out, and against Ray's own packing of the same folder."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from runyard.errors import UserError
from runyard.launch.project_files import check_size, shipment


def lay_out(root: Path) -> None:
    files = {
        "train.py": "print('score=1')\n",
        "lab/model.py": "x = 1\n",
        "lab/.gitignore": "*.ckpt\nscratch/\n",
        "lab/last.ckpt": "weights",
        "lab/scratch/notes.txt": "tmp",
        "requirements.txt": "gymnasium==0.29.1\n",
        ".rayignore": "/secret_notes.txt\n",
        "secret_notes.txt": "not for the cluster",
        # A second virtualenv and a conda env, wherever they sit, and training output.
        "envs/gym029/pyvenv.cfg": "home = /usr/bin\n",
        "envs/gym029/lib/site.py": "",
        "tools/conda/conda-meta/history": "",
        "runs/ppo/events.out.tfevents.1.host": "event",
        "lab/out/events.out.tfevents.2.host": "event",
        "mlruns/0/meta.yaml": "",
        "wandb/run-1/files.txt": "",
        ".runyard/mlflow.db": "",
        "lab/__pycache__/model.cpython-311.pyc": "",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "big.bin").write_bytes(b"\0" * (2 * 1024 * 1024))


def test_a_project_ships_its_code_not_its_environments_output_or_ignored_files(tmp_path: Path):
    lay_out(tmp_path)
    found = shipment(tmp_path, max_file_mb=1.0)
    assert sorted(found.files) == [".rayignore", "lab/.gitignore", "lab/model.py",
                                   "requirements.txt", "train.py"]
    assert found.environments == ["envs/gym029", "tools/conda"]
    assert found.large_files == ["big.bin"]
    assert found.summary() == f"5 files, {found.total_bytes / 2**20:.1f} MiB"


def test_ray_packs_exactly_what_the_shipment_says(tmp_path: Path):
    # Ray's own packing of the folder with the shipment's excludes (its .gitignore and
    # .rayignore handling included): the same files, so the summary is what travels.
    from ray._private.runtime_env.packaging import create_package

    project = tmp_path / "project"
    lay_out(project)
    found = shipment(project, max_file_mb=1.0)
    package = tmp_path / "package.zip"
    create_package(str(project), package, include_gitignore=True, excludes=found.excludes)
    with zipfile.ZipFile(package) as packed:
        shipped = sorted(name for name in packed.namelist() if not name.endswith("/"))
    assert shipped == sorted(found.files)


def test_a_project_over_the_upload_limit_is_refused_naming_its_largest_files(tmp_path: Path):
    lay_out(tmp_path)
    found = shipment(tmp_path, max_file_mb=10.0)
    with pytest.raises(UserError) as refused:
        check_size(found, max_upload_mb=1.0)
    message = str(refused.value)
    assert "over the 1 MiB limit (--max-upload-mb)" in message
    assert message.index("big.bin") < message.index("train.py")  # largest first
    assert ".gitignore or .rayignore" in message
    check_size(found, max_upload_mb=10.0)  # within the limit: no complaint
