"""What a sweep leaves on storage, on a local path or a URI (s3://...): its own
record, sweep.json, and the state Tune saves of each of its experiments.

`bnsweep run` writes sweep.json before any trial starts; `resume` and `sync`
need nothing else. Reading any of it needs neither Ray nor MLflow.
"""

from __future__ import annotations

import fnmatch
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
    seeds: list[int] | None = None  # the seeds run (--seeds or the file's SEEDS); None in older sweep.json
    experiment: str | None = None  # the MLflow experiment asked for, even with --no-tracking (sync uses it)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)

    @classmethod
    def read(cls, sweep_dir: str) -> SweepSpec:
        return cls(**json.loads(read_text(join(sweep_dir, SWEEP_FILE))))

    def write(self, sweep_dir: str) -> None:
        write_text(join(sweep_dir, SWEEP_FILE), self.to_json())


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
    fs, path = filesystem(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


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


def tune_experiments(sweep_dir: str) -> list[str]:
    """The Tune experiments of a sweep: grid-<sweep>/, or <arm>-<sweep>/ per Optuna arm
    (sweep.experiment_path)."""
    return [join(sweep_dir, name) for name in list_names(sweep_dir) if exists(join(sweep_dir, name, "tuner.pkl"))]


# A trial that failed for a reason another attempt cannot fix (a bad config, data a node
# lacks) ends without raising, so that Tune does not retry it; its reason is written here,
# one object per trial (S3 cannot append): <sweep>/failures/<trial folder name>.json.
FAILURES_DIR = "failures"


def write_failure(sweep_dir: str, trial: str, reason: str) -> None:
    write_text(join(sweep_dir, FAILURES_DIR, f"{trial}.json"), json.dumps({"trial": trial, "reason": reason}))


def failure_of(sweep_dir: str, trial: str) -> str | None:
    """The reason a trial failed beyond retrying, or None."""
    path = join(sweep_dir, FAILURES_DIR, f"{trial}.json")
    return json.loads(read_text(path))["reason"] if exists(path) else None


def read_failures(sweep_dir: str) -> dict[str, str]:
    """Trial folder name -> reason, for the sweep's trials that failed beyond retrying."""
    root = join(sweep_dir, FAILURES_DIR)
    out = {}
    for name in list_names(root):
        if name.endswith(".json"):
            record = json.loads(read_text(join(root, name)))
            out[record["trial"]] = record["reason"]
    return out


def saved_trials(experiment: str) -> list[dict[str, Any]] | None:
    """The trials in Tune's newest saved state of an experiment, which is what a
    restore starts from: dicts with trial_id, status, config, relative_logdir
    (None until the trial started). None when nothing was saved."""
    states = fnmatch.filter(list_names(experiment), "experiment_state-*.json")
    if not states:
        return None
    text = read_text(join(experiment, max(states)))  # the newest, as Tune's restore picks it
    return [json.loads(trial) for trial, _ in json.loads(text)["trial_data"]]
