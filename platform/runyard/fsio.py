"""Files at a local path or a storage URI (`s3://bucket/key`, `gs://...`, `file:///...`),
through pyarrow's filesystem layer.

The one place runyard opens storage: a job's state (execute/storage.py, the ledger) and
datasets kept in storage (data/stored.py) both go through here, so a local folder and a
bucket take the same code path. A leaf module, below every layer: it imports nothing of
runyard, and pyarrow only when a file is opened (checking a spec never pays for it).
"""

from __future__ import annotations

import posixpath
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyarrow import fs


def is_uri(location: str) -> bool:
    """Whether `location` names its filesystem (`scheme://...`) rather than being a plain path."""
    return "://" in location


def filesystem(location: str) -> tuple[fs.FileSystem, str]:
    """The pyarrow filesystem that holds `location` (a URI or an absolute local path), and the
    path within it."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(location)


def read_bytes(location: str) -> bytes:
    store, inner = filesystem(location)
    with store.open_input_stream(inner) as stream:
        return stream.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode()


def write_text(location: str, text: str) -> None:
    """Write `location` whole or not at all: a local file is written beside it and renamed
    over it; an object store never shows a half-written object."""
    from pyarrow import fs

    store, inner = filesystem(location)
    store.create_dir(posixpath.dirname(inner), recursive=True)
    local = isinstance(store, fs.LocalFileSystem)
    staging = f"{inner}.{uuid.uuid4().hex}.tmp" if local else inner
    with store.open_output_stream(staging) as stream:
        stream.write(text.encode())
    if staging != inner:
        store.move(staging, inner)


def delete_file(location: str) -> None:
    """Remove the file at `location`, if there is one."""
    from pyarrow import fs

    store, inner = filesystem(location)
    if store.get_file_info(inner).type != fs.FileType.NotFound:
        store.delete_file(inner)


def delete_folder(location: str) -> None:
    """Remove the folder at `location` and all it holds, if there is one."""
    from pyarrow import fs

    store, inner = filesystem(location)
    if store.get_file_info(inner).type == fs.FileType.Directory:
        store.delete_dir(inner)


def upload_folder(local_dir: str, location: str) -> None:
    """Copy the files of a local folder to `location` (a folder at a path or a URI)."""
    from pyarrow import fs

    store, inner = filesystem(location)
    store.create_dir(inner, recursive=True)
    fs.copy_files(local_dir, inner, source_filesystem=fs.LocalFileSystem(),
                  destination_filesystem=store)


def download_folder(location: str, local_dir: str) -> bool:
    """Copy the folder at `location` into a local folder; False when there is none."""
    from pyarrow import fs

    store, inner = filesystem(location)
    if store.get_file_info(inner).type != fs.FileType.Directory:
        return False
    fs.copy_files(inner, local_dir, source_filesystem=store,
                  destination_filesystem=fs.LocalFileSystem())
    return True
