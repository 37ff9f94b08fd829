"""Atomic, verifiable checkpoints.

`save_atomic` writes to a temporary file in the same folder, fsyncs it, keeps the previous checkpoint as
`<name>.prev` and renames the new one into place, so a kill at any moment leaves at least one complete
checkpoint. `load_checkpoint` falls back to the previous one when the newest is truncated or corrupt.
Everything is loaded with `weights_only=True`: a checkpoint can hold tensors and plain data, never code.
"""
from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError, DiskFull, disk_full, exception_chain


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write) -> None:
    """Call `write(file)` on a temporary file, fsync, then rename over `path`. A failed write removes the
    temporary file (its space is back at once) and leaves `path` as it was; a full disk is a DiskFull."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        interrupt = next((c for c in exception_chain(e) if not isinstance(c, Exception)), None)
        if interrupt is not None and interrupt is not e:  # Ctrl-C inside torch.save: torch wraps it in a
            raise interrupt from None                     # RuntimeError; it is still an interruption
        if disk_full(e):
            raise DiskFull(f"no space left on the device writing {path}; free space there (or point --runs-dir "
                           f"and --results-dir at a larger disk) and run the same command again: complete "
                           f"files are kept") from None
        raise
    _fsync_dir(path.parent)


def remove_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed writer left in `folder` (call it holding the folder's lock)."""
    for tmp in Path(folder).glob(".*.tmp[0-9]*"):
        tmp.unlink(missing_ok=True)


def save_atomic(state: dict, path: Path, keep_previous: bool = True) -> None:
    """Write `state` to `path`; the file it replaces becomes `<name>.prev` unless it is truncated (not a
    complete zip, as every torch.save file is), so a damaged newest file never displaces a good `.prev`."""
    path = Path(path)
    if keep_previous and path.exists() and zipfile.is_zipfile(path):
        os.replace(path, path.with_name(path.name + ".prev"))
    write_atomic(path, lambda f: torch.save(state, f))


def _load(path: Path, fix: str = "delete it to restart the run") -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, unsafe object ...
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}); {fix}") from None


def load_checkpoint(path: Path) -> dict | None:
    """The newest readable checkpoint at `path` (or its `.prev`), None if there is none.

    A kill between the two renames of `save_atomic` leaves only `.prev`; a damaged newest file is
    skipped with a warning. Both damaged is a CheckpointError naming both.
    """
    path = Path(path)
    prev = path.with_name(path.name + ".prev")
    if path.exists():
        try:
            return _load(path)
        except CheckpointError as e:
            if not prev.exists():
                raise
            try:
                state = _load(prev)
            except CheckpointError:
                raise CheckpointError(f"checkpoints {path} and {prev.name} are both unreadable; delete both "
                                      f"to restart the run from the beginning") from None
            warnings.warn(f"{e.args[0].split(';')[0]}; falling back to the previous one, {prev.name}")
            return state
    return _load(prev) if prev.exists() else None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_verified(path: Path, sha256: str) -> dict:
    """A pretrained state dict, only if its sha256 matches the one recorded in the project.

    `sha256` may be a prefix of at least 8 hex digits: torchvision names its weight files with one
    (resnet34-b627a593.pth) and verifies that prefix the same way.
    """
    path = Path(path)
    if len(sha256) < 8:
        raise CheckpointError(f"the recorded sha256 for {path} is too short ({sha256!r}); record at least 8 hex digits")
    if not path.is_file():
        raise CheckpointError(f"pretrained weights {path} not found; download them there (sha256 {sha256[:12]}...)")
    actual = sha256_of(path)
    if not actual.startswith(sha256.lower()):
        raise CheckpointError(f"pretrained weights {path} have sha256 {actual[:12]}..., expected {sha256[:12]}...; "
                              f"re-download the file")
    state = _load(path, fix="re-download the file")
    return state.get("state_dict", state) if isinstance(state, dict) else state
