"""An MLflow server with a login (`mlflow server --app-name basic-auth`, its extra packages
from the test extras: mlflow[auth]) on loopback: a wrong or missing password stops run,
resume, sync and report with one line naming the variables MLflow logs in with, before
Ray starts or anything is written; the right one records as without a login."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import VENV_BIN, bnsweep_env, free_port, run_bnsweep, sweep_dir_of, write_space
from helpers import TINY, bnsweep_here, wait_for_health
from mlflow import MlflowClient

pytestmark = pytest.mark.slow  # a real server (and, for the right password, a sweep on Ray)

ADMIN, PASSWORD = "admin", "right-Passw0rd-17"
LOGIN_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` on loopback; its admin is ADMIN / PASSWORD."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root}/auth.db\nadmin_username = {ADMIN}\nadmin_password = {PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
           # The auth app's CSRF protection refuses to start without a fixed key.
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "bnsweep-test-key"}
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts")],
        env=env, stdout=open(root / "server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    wait_for_health(uri, proc, root / "server.log")
    yield uri
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def env_with(uri: str, ray_address: str | None = None, **login: str) -> dict[str, str]:
    env = bnsweep_env(**({"RAY_ADDRESS": ray_address} if ray_address else {}))
    env = {k: v for k, v in env.items() if k not in LOGIN_VARS}
    return {**env, "MLFLOW_TRACKING_URI": uri, **login}


def assert_refused(r: subprocess.CompletedProcess, uri: str, what: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]  # one line
    assert line.startswith(f"bnsweep: error: MLflow at {uri} {what}"), line
    assert "MLFLOW_TRACKING_USERNAME" in line and "MLFLOW_TRACKING_PASSWORD" in line and "MLFLOW_TRACKING_TOKEN" in line


WRONG_LOGINS = {
    "no login": ({}, "asks for a login (HTTP 401) and none was given"),
    "wrong password": ({"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": "wrong"},
                       "refused the credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (HTTP 401)"),
    "no password": ({"MLFLOW_TRACKING_USERNAME": ADMIN},
                    "asks for a login (HTTP 401): MLFLOW_TRACKING_USERNAME is set but not MLFLOW_TRACKING_PASSWORD"),
}


def test_credentials_are_checked_before_anything_starts(auth_server, ray_address, tmp_path, monkeypatch, capsys):
    def refused(*args: str, **login: str) -> subprocess.CompletedProcess:  # stops before Ray: run in this process
        return bnsweep_here(monkeypatch, capsys, *args, env=env_with(auth_server, ray_address, **login), cwd=tmp_path)

    space = write_space(tmp_path / "authed.py", f"""
        SPACE = {{"bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 1}}
    """)
    right = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    # Wrong or missing: `run` stops before Ray or storage are touched.
    for login, what in WRONG_LOGINS.values():
        r = refused("run", str(space), "--storage", str(tmp_path / "refused"), **login)
        assert_refused(r, auth_server, what)
        assert not (tmp_path / "refused").exists()
    for case in ("no login", "wrong password"):
        login, what = WRONG_LOGINS[case]
        r = refused("report", "bnsweep-authed", "--out", str(tmp_path / "report"), **login)
        assert_refused(r, auth_server, what)
        assert not (tmp_path / "report").exists()

    # The right password: the sweep is recorded as on a server without a login.
    r = run_bnsweep("run", str(space), "--storage", str(tmp_path / "results"),
                    env=env_with(auth_server, ray_address, **right), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sweep_dir = sweep_dir_of(tmp_path / "results")
    os.environ.update(right)  # this process's client logs in as the admin too
    try:
        client = MlflowClient(auth_server)
        exp = client.get_experiment_by_name("bnsweep-authed")
        runs = client.search_runs([exp.experiment_id])
    finally:
        for k in right:
            os.environ.pop(k)
    assert sorted(x.data.tags.get("bnsweep.role") for x in runs) == ["sweep", "trial", "trial"]
    assert all(x.info.status == "FINISHED" for x in runs)

    # resume and sync of that sweep: refused before Ray or MLflow is written to.
    logs = sorted((sweep_dir / "logs").iterdir())
    for command, case in (("resume", "wrong password"), ("sync", "no password")):
        login, what = WRONG_LOGINS[case]
        r = refused(command, str(sweep_dir), **login)
        assert_refused(r, auth_server, what)
    assert sorted((sweep_dir / "logs").iterdir()) == logs  # no driver started

    r = run_bnsweep("sync", str(sweep_dir), env=env_with(auth_server, **right), cwd=tmp_path)
    assert r.returncode == 0 and "0 epoch(s) added" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    r = run_bnsweep("report", "bnsweep-authed", "--out", str(tmp_path / "report"),
                    env=env_with(auth_server, **right), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert Path(tmp_path / "report").is_dir()
