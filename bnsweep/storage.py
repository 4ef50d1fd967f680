"""The sweep directory's own record, sweep.json, on a local path or a URI (s3://...).

`bnsweep run` writes it before any trial starts; `resume` and `sync` need
nothing else. Reading it needs neither Ray nor MLflow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

SWEEP_FILE = "sweep.json"


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

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)

    @classmethod
    def read(cls, sweep_dir: str) -> "SweepSpec":
        return cls(**json.loads(read_text(f"{sweep_dir}/{SWEEP_FILE}")))

    def write(self, sweep_dir: str) -> None:
        write_text(f"{sweep_dir}/{SWEEP_FILE}", self.to_json())


def filesystem(uri: str):
    import pyarrow.fs as pafs  # comes with Ray; speaks local paths, s3://, gs://

    return pafs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))


def write_text(uri: str, text: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()
