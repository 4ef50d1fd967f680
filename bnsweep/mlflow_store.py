"""The MLflow store a sweep records into, checked before anything starts: where it is,
that it answers, that it takes bnsweep's credentials, and that the experiment and the
sweep's run are as the user left them (not in MLflow's trash).

Every failure is one line naming what to do. A store that does not answer is the
environment (exit 1); credentials it refuses, or an experiment or run the user deleted,
are the request as it stands (exit 2): bnsweep never restores what a user deleted.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

# A down or slow server must not stall Tune's event loop for minutes: MLflow's
# defaults are 120 s per request and 7 retries with backoff (read at each request).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from bnsweep.errors import BnsweepError  # noqa: E402

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
UNSET_URI_HINT = ", or unset MLFLOW_TRACKING_URI to use ./mlflow.db"
# How a client logs in to an MLflow server (mlflow/environment_variables.py, MLflow 3.17):
# basic auth (`mlflow server --app-name basic-auth`) or a bearer token.
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# MLflow's error codes for HTTP 401 and 403 (mlflow/protos/databricks.proto).
REFUSED = ("UNAUTHENTICATED", "PERMISSION_DENIED")


class TrackingError(BnsweepError):
    """MLflow cannot be used as asked; the message says what to do."""


class StoreStateError(TrackingError):
    """The store answers but not as asked: it refuses bnsweep's credentials, or the user
    deleted the experiment or run the sweep records into."""

    exit_code = 2


def resolve_tracking_uri(flag: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow's default store in the working directory."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # Absolute, so that every process (Ray workers change directory) writes one file.
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    return uri


def first_line(e: BaseException, limit: int = 200) -> str:
    return (str(e).strip().splitlines() or [""])[0][:limit]


def check_reachable(uri: str, must_exist: bool = False, hint: str = UNSET_URI_HINT) -> None:
    """Fail with one line, before anything is started, if `uri` is not a store MLflow can use
    with this process's credentials: one authenticated call (a one-result experiment search),
    since a server's /health answers anyone.

    must_exist: for readers (report, analysis), a sqlite file that is not there
    is a wrong path, not a store to create. `hint` ends the message of an
    unreachable server: what the caller can do instead.
    """
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except OSError as e:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({e}). Start it (e.g. `mlflow server --host 127.0.0.1 "
                f"--port 5000`){hint}") from None
    elif must_exist and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise TrackingError(f"no MLflow store at {uri} (no such file); pass --tracking-uri or set "
                            "MLFLOW_TRACKING_URI to the store your sweeps recorded into")
    try:
        with _store_creation_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except mlflow.exceptions.MlflowException as e:
        raise_if_refused(uri, e)
        raise _unusable(uri, e) from None
    except Exception as e:  # noqa: BLE001 — an unknown scheme, a missing driver, a store that will not open
        raise _unusable(uri, e) from None


def _unusable(uri: str, e: Exception) -> TrackingError:
    advice = "" if "://" in uri and uri.split("://")[0] in DATABASE_SCHEMES + ("http", "https") else \
        ". Use an http(s):// server or a database URI such as sqlite:///mlflow.db"
    return TrackingError(f"cannot use MLflow tracking URI {uri}: {type(e).__name__}: {first_line(e)}{advice}")


def raise_if_refused(uri: str, e: mlflow.exceptions.MlflowException) -> None:
    """A 401 or 403 from the server as one line naming the variables MLflow logs in with."""
    if e.error_code not in REFUSED:
        return
    given = [v for v in CREDENTIAL_VARS if os.environ.get(v)]
    from mlflow.utils.credentials import _read_mlflow_creds_from_file

    if not given and any(_read_mlflow_creds_from_file()):
        given = ["~/.mlflow/credentials"]
    if e.error_code == "PERMISSION_DENIED":
        who = os.environ.get("MLFLOW_TRACKING_USERNAME")
        what = f"refused the account {who!r}" if who else "refused the credentials given"
        what += " the permission this needs (HTTP 403)"
    elif given == ["MLFLOW_TRACKING_USERNAME"]:  # MLflow sends no login without both
        what = "asks for a login (HTTP 401): MLFLOW_TRACKING_USERNAME is set but not MLFLOW_TRACKING_PASSWORD"
    elif given:
        what = f"refused the credentials in {' / '.join(given)} (HTTP 401)"
    else:
        what = "asks for a login (HTTP 401) and none was given"
    raise StoreStateError(f"MLflow at {uri} {what}: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                          "(or MLFLOW_TRACKING_TOKEN) to an account of that server")


@contextlib.contextmanager
def refused_as_error(uri: str):
    """Around MLflow calls after the check: a 401 / 403 (credentials changed, an account
    that may read but not write this experiment) is the same one line, not a traceback."""
    try:
        yield
    except mlflow.exceptions.MlflowException as e:
        raise_if_refused(uri, e)
        raise


@contextlib.contextmanager
def _store_creation_lock(uri: str):
    """For a sqlite store: one process at a time through MLflow's first use of it.

    A new store's first use creates its tables, and two sweeps started together
    in a folder without ./mlflow.db would both create them: one then fails with
    "table already exists". Later uses find the tables and change nothing. The
    lock is flock(2) on the database's folder, so it leaves no file behind and
    is released when the process dies.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    folder = Path(uri[len("sqlite:///"):]).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ------------------------------------------------------------ lifecycles ---

def _mlflow_cli(uri: str, *args: str) -> str:
    """An `mlflow` command line for the store at `uri` (the CLI reads MLFLOW_TRACKING_URI)."""
    return f"MLFLOW_TRACKING_URI={shlex.quote(uri)} {shlex.join(['mlflow', *args])}"


def check_experiment_active(client: MlflowClient, uri: str, name: str, elsewhere: str) -> str | None:
    """The id of experiment `name` if it exists and is active, None if there is none.
    One deleted by the user (in MLflow's trash) stops bnsweep with one line: restore it,
    or `elsewhere` (what the caller can do instead)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return None
    if exp.lifecycle_stage == "deleted":
        raise _deleted_experiment(uri, name, exp.experiment_id, elsewhere)
    return exp.experiment_id


def _deleted_experiment(uri: str, name: str, exp_id: str, elsewhere: str) -> StoreStateError:
    restore = _mlflow_cli(uri, "experiments", "restore", "--experiment-id", exp_id)
    return StoreStateError(f"MLflow experiment {name!r} (id {exp_id}) at {uri} is deleted (in MLflow's trash, "
                           f"its runs with it); bnsweep leaves it so. Restore it with `{restore}`, or {elsewhere}")


def check_run_active(client: MlflowClient, uri: str, run_id: str, experiment: str, elsewhere: str) -> bool:
    """Whether the sweep's parent run `run_id` is there (False: not in this store). Its
    experiment or the run itself deleted by the user stops bnsweep with one line."""
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise_if_refused(uri, e)
        raise TrackingError(f"MLflow at {uri} failed to look up the sweep's parent run: {first_line(e)}") from None
    if run.info.lifecycle_stage != "deleted":
        return True
    exp = client.get_experiment(run.info.experiment_id)
    if exp.lifecycle_stage == "deleted":
        raise _deleted_experiment(uri, exp.name, exp.experiment_id, elsewhere)
    restore = _mlflow_cli(uri, "runs", "restore", "--run-id", run_id)
    raise StoreStateError(f"the sweep's parent run {run_id} in MLflow experiment {experiment!r} at {uri} is deleted "
                          f"(in MLflow's trash); bnsweep leaves it so. Restore it with `{restore}`, or {elsewhere}")


def restore_run_command(uri: str, run_id: str) -> str:
    return _mlflow_cli(uri, "runs", "restore", "--run-id", run_id)
