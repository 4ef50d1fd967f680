"""A sweep's storage, a local path or a URI (s3://...), and what `run` was asked to do.

`bnsweep run` writes sweep.json before any trial starts; the trials' record is the
ledger beside it (bnsweep/ledger.py). `resume` and `sync` need nothing else; reading
any of it needs neither Ray nor MLflow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

SWEEP_FILE = "sweep.json"
DEFAULT_STORAGE = "bnsweep_results"  # where sweeps go without --storage or $BNSWEEP_STORAGE


@dataclass
class SweepSpec:
    """Everything `run` decided, saved as sweep.json so resume and sync need nothing else."""

    study_path: str
    study_text: str
    smoke: bool
    overrides: dict[str, Any]
    resources: dict[str, float]
    max_concurrent: int | None
    max_failures: int
    tracking: dict[str, Any] | None
    seeds: list[int] | None = None  # the seeds run (--seeds or the file's SEEDS); None in older sweep.json
    experiment: str | None = None  # the MLflow experiment asked for, even with --no-tracking (sync uses it)
    sweep_dir: str | None = None  # where `run` started it: the one place it resumes (runner.resume)
    confirm_seeds: int | None = None  # Optuna: the confirmation seeds per arm run (None: a grid, or older)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)

    @classmethod
    def read(cls, sweep_dir: str) -> SweepSpec:
        return cls(**json.loads(read_text(join(sweep_dir, SWEEP_FILE))))

    def write(self, sweep_dir: str) -> None:
        write_text(join(sweep_dir, SWEEP_FILE), self.to_json())


# A sweep stops (as on Ctrl-C) when its local results folder has less free space than
# this, or than three of its trials' checkpoints if that is more: Tune must still save
# its state, and each running trial its next checkpoint. Object stores do not fill up.
RESERVE_BYTES = 64 * 2**20


def short_of_space(sweep_dir: str, checkpoint_bytes: int = 0) -> str | None:
    """Why a local sweep folder is too full to go on (for a person), or None."""
    if "://" in sweep_dir:
        return None
    import shutil

    folder = os.path.abspath(sweep_dir)
    while not os.path.isdir(folder):  # a folder still to be created: the space of its parent's disk
        folder = os.path.dirname(folder)
    free, need = shutil.disk_usage(folder).free, max(RESERVE_BYTES, 3 * checkpoint_bytes)
    if free >= need:
        return None
    return (f"{sweep_dir} has {free / 2**20:.0f} MB free, less than the {need / 2**20:.0f} MB a sweep keeps in "
            "reserve for Tune's state and the trials' next checkpoints")


# What a name a user gave (an MLflow experiment name, free text) may keep when it becomes a
# folder name: the portable file-name characters of POSIX (IEEE Std 1003.1, 3.282). Anything
# else, "/" and "\\" included, could make it a path rather than a name.
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_NAME = 120  # characters; well under the 255 bytes of a file name on ext4, APFS and NTFS


def folder_name(name: str) -> str:
    """The one rule by which a name becomes a folder: a single path component inside the
    folder it is meant for, never ".", "..", hidden or absolute. A name that passes as it
    is stays itself ("bnsweep-lr"); any other gets its unsafe characters as "_" and a short
    hash of the whole name, so that names differing in those characters get folders of
    their own ("a/b", "a:b" and "a_b")."""
    safe = "".join(c if c in NAME_CHARS else "_" for c in name).lstrip(".")[:MAX_NAME]
    if safe == name and safe:
        return safe
    import hashlib

    return f"{safe or '_'}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def contains(folder: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or lies under it, both as the file system resolves them (links followed)."""
    folder, path = os.path.realpath(folder), os.path.realpath(path)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def join(uri: str, *names: str) -> str:
    """uri/name/...: for a URI, the names go before its query, pyarrow's options
    (s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http), which must stay last."""
    base, sep, query = uri.partition("?") if "://" in uri else (uri, "", "")
    return "/".join([base.rstrip("/"), *names]) + sep + query


def split(uri: str) -> tuple[str, str]:
    """(parent, name) of a path or URI, its query kept on the parent: join's inverse."""
    base, sep, query = uri.partition("?") if "://" in uri else (uri, "", "")
    parent, name = base.rstrip("/").rsplit("/", 1)
    return parent + sep + query, name


def filesystem(uri: str):
    import pyarrow.fs as pafs  # comes with Ray; speaks local paths, s3://, gs://

    return pafs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))


def write_text(uri: str, text: str) -> None:
    """write_bytes of the text in UTF-8, as read_text reads it."""
    write_bytes(uri, text.encode())


def write_bytes(uri: str, data: bytes) -> None:
    """The whole file or none, for a reader at any moment: an object store's put is atomic;
    a local file is written beside its name and renamed onto it."""
    fs, path = filesystem(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    if "://" in uri:
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # the write failed (a full disk): no half file left behind
            os.remove(tmp)


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def exists(uri: str) -> bool:
    from pyarrow import fs as pafs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_names(uri: str) -> list[str]:
    """Names directly under a directory; [] if it does not exist."""
    from pyarrow import fs as pafs

    fs, path = filesystem(uri)
    try:
        return sorted(e.base_name for e in fs.get_file_info(pafs.FileSelector(path)))
    except FileNotFoundError:
        return []


def delete(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.delete_file(path)
