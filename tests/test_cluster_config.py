"""cluster.yaml: accepted by Ray's cluster launcher, and closed to the internet.

Offline and fast: no AWS call, no boto3. Validation is the launcher's own
(`ray up` -> commands._bootstrap_config): prepare_config fills in the AWS
provider defaults and merges setup commands, validate_config checks the result
against ray/autoscaler/ray-schema.json and its cross-field rules. The steps that
follow in `ray up` talk to AWS (instance-type lookup, IAM, key pair, security
group) and are left out.

The security checker lives here, not in bnsweep: it reads the prepared config
(so Ray's defaults are included wherever the file leaves a key out) and lists
every way the cluster would be reachable, or run, unsafely.
"""

from __future__ import annotations

import ast
import copy
import ipaddress
import itertools
import os
import re
import shlex
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import wait_for_health

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
CLUSTER_DOC = ROOT / "docs" / "cluster.md"

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Shell variables cluster.yaml sets to the head's private IP (see its setup_commands).
HEAD_IP_VARS = {"$BNSWEEP_HEAD_IP", "${BNSWEEP_HEAD_IP}"}
SHELL_OPERATORS = {";", "&&", "||", "|", "|&", "&", "(", ")", ";;"}
# MLflow backends that are databases; the file store (a path or file:) is not one.
DB_BACKENDS = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+", "mssql+")
COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands",
                "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


# ------------------------------------------------------------ the launcher ---

def load_raw(path: Path = CLUSTER_YAML) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())  # what `ray up` does with the file


def launcher_prepare(raw: dict[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_raw()


@pytest.fixture(scope="module")
def prepared(raw) -> dict[str, Any]:
    return launcher_prepare(raw)


def ray_default_inbound_rules(extended_rules: list[dict]) -> list[dict]:
    """The inbound rules `ray up` writes into a security group it creates, computed by
    Ray's own functions. Their module imports boto3 at import time, so the three pure
    functions are lifted out of its source instead of importing it."""
    import ray.autoscaler

    src = Path(ray.autoscaler.__file__).parent / "_private" / "aws" / "config.py"
    wanted = {"_create_default_inbound_rules", "_create_default_intracluster_inbound_rules",
              "_create_default_ssh_inbound_rules"}
    funcs = [n for n in ast.parse(src.read_text()).body
             if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {f.name for f in funcs} == wanted, f"Ray's security-group code moved: update this test ({src})"
    namespace: dict[str, Any] = {"itertools": itertools}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(src), "exec"), namespace)
    return namespace["_create_default_inbound_rules"](["sg-bnsweep-ray"], copy.deepcopy(extended_rules))


# ------------------------------------------------------- reading commands ---

def simple_commands(cmd: str) -> list[list[str]]:
    """A shell command line as its simple commands (words between ; && || | & ( ))."""
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_OPERATORS:
            out.append([])
        else:
            out[-1].append(token)
    return [words for words in out if words]


def invocations(cmd: str, program: tuple[str, ...]) -> list[list[str]]:
    """The argument lists of every `program ...` (e.g. ("mlflow", "server")) in cmd."""
    found = []
    for words in simple_commands(cmd):
        for i in range(len(words) - len(program) + 1):
            if tuple(words[i:i + len(program)]) == program:
                found.append(words[i + len(program):])
    return found


def options(args: list[str]) -> dict[str, list[str | None]]:
    """--flag value / --flag=value / --flag, up to the first redirection."""
    opts: dict[str, list[str | None]] = {}
    i = 0
    while i < len(args):
        word = args[i]
        following = args[i + 1] if i + 1 < len(args) else None
        if word[:1] in "<>" or (word.isdigit() and following is not None and following[:1] in "<>"):
            break
        if word.startswith("-"):
            if "=" in word:
                key, value = word.split("=", 1)
            elif following is not None and not following.startswith("-") and following[:1] not in "<>":
                key, value = word, following
                i += 1
            else:
                key, value = word, None
            opts.setdefault(key, []).append(value)
        i += 1
    return opts


def exports(cmds: list[str]) -> dict[str, str]:
    """NAME -> value for every `export NAME=value` the commands write or run, later wins,
    with $NAME / ${NAME} of earlier exports substituted. A value computed on the node
    ($(...), ${X:-...}) is left out, so references to it stay as written."""
    env: dict[str, str] = {}
    for cmd in cmds:
        for name, value in re.findall(r"(?:^|[\s;'\"])export\s+([A-Za-z_]\w*)=([^\s'\";]*)", cmd, re.M):
            if "$(" in value or "`" in value or ":-" in value:
                env.pop(name, None)
            else:
                env[name] = expand(value, env)
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: env.get(m.group(1), m.group(0)), text)


def node_commands(cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(head, worker) commands of a prepared config: setup_commands are already merged
    into head_/worker_setup_commands; node types may override the worker ones."""
    head = cfg["initialization_commands"] + cfg["head_setup_commands"] + cfg["head_start_ray_commands"]
    worker = cfg["initialization_commands"] + cfg["worker_setup_commands"] + cfg["worker_start_ray_commands"]
    for node_type in cfg["available_node_types"].values():
        worker += node_type.get("initialization_commands", []) + node_type.get("worker_setup_commands", [])
    return head, worker


# ------------------------------------------------------ security checker ---

def ingress_problems(cfg: dict[str, Any]) -> list[str]:
    node_types = cfg["available_node_types"].values()
    if all("SecurityGroupIds" in t["node_config"] for t in node_types):
        return []  # groups made outside this file (docs/cluster.md, Hardening): the launcher writes no rules
    extended = cfg["provider"].get("security_group", {}).get("IpPermissions", [])
    problems = []
    for rule in ray_default_inbound_rules(extended):
        cidrs = ([r.get("CidrIp") for r in rule.get("IpRanges", [])]
                 + [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])])
        sources = cidrs + [p.get("PrefixListId") for p in rule.get("PrefixListIds", [])]
        if not sources:
            continue  # from security groups only (the cluster's own: intra-cluster traffic)
        proto = str(rule.get("IpProtocol"))
        if proto in ("tcp", "6") and rule.get("FromPort") == 22 and rule.get("ToPort") == 22:
            continue  # SSH, key-only; the way in to everything else
        ports = "all ports" if proto == "-1" else f"{proto} {rule.get('FromPort')}-{rule.get('ToPort')}"
        world = any(c and ipaddress.ip_network(c, strict=False).prefixlen == 0 for c in cidrs)
        problems.append(f"security group opens {ports} to {', '.join(map(str, sources))}"
                        f"{' (the whole internet)' if world else ''}: only SSH (tcp 22) may be reachable "
                        "from addresses; Ray's and MLflow's ports only from the cluster's own security group")
    return problems


def mlflow_problems(server_args: list[str], env: dict[str, str]) -> list[str]:
    opts = options(server_args)
    problems = []
    hosts = opts.get("--host", []) + opts.get("-h", []) or ["127.0.0.1"]  # MLflow's default
    for host in hosts:
        if host in LOOPBACK or host in HEAD_IP_VARS:
            continue
        try:
            ip = ipaddress.ip_address(host or "")
            if ip.is_private and not ip.is_unspecified and not ip.is_loopback:
                continue
        except ValueError:
            pass
        problems.append(f"MLflow server bound to {host!r}: bind it to the head's private IP "
                        "($BNSWEEP_HEAD_IP) or 127.0.0.1, never 0.0.0.0 / :: / a public address")
    if "--disable-security-middleware" in opts:
        problems.append("MLflow server runs with --disable-security-middleware")
    for flag in ("--allowed-hosts", "--cors-allowed-origins"):
        if any(v is not None and "*" in [p.strip() for p in v.split(",")] for v in opts.get(flag, [])):
            problems.append(f"MLflow server allows every origin/host ({flag} '*')")
    backend = [v for v in opts.get("--backend-store-uri", []) if v]
    if not backend or not expand(backend[-1], env).startswith(DB_BACKENDS):
        problems.append(f"MLflow backend store {backend[-1] if backend else '(default)'}: give --backend-store-uri "
                        "a database (sqlite:////abs/path.db or postgresql://...), not the file store")
    problems += ui_link_problems(opts, env.get("MLFLOW_TRACKING_URI", ""))
    if "--no-serve-artifacts" in opts:
        problems.append("MLflow server does not proxy artifacts (--no-serve-artifacts): "
                        "clients would write to their own local paths")
    dest = [v for v in opts.get("--artifacts-destination", []) if v]
    if not dest or not expand(dest[-1], env).startswith("s3://"):
        where = expand(dest[-1], env) if dest else "./mlartifacts (default)"
        problems.append(f"MLflow artifacts go to {where}: use --artifacts-destination s3://..., "
                        "storage that outlives the head and every node can reach")
    return problems


# A browser on the laptop through docs/cluster.md's SSH tunnel (ssh -L 5000:...).
TUNNEL = "localhost:5000"
SAMPLE_HEAD_IP = "10.0.0.10"  # stands for $BNSWEEP_HEAD_IP, which the head computes: a private IP


def with_head_ip(text: str) -> str:
    return text.replace("${BNSWEEP_HEAD_IP}", SAMPLE_HEAD_IP).replace("$BNSWEEP_HEAD_IP", SAMPLE_HEAD_IP)


def ui_link_problems(opts: dict[str, list[str | None]], tracking_uri: str) -> list[str]:
    """What MLflow's security middleware would refuse of a browser opening the links bnsweep
    prints (the tracking URI's origin, from a VPN or a bastion) or the SSH tunnel's localhost:
    the UI's POSTs (it lists runs by POST) by origin, any request by its Host header. Decided
    by the functions the server itself runs (mlflow.server.security_utils, MLflow 3.17)."""
    from mlflow.server.security_utils import (
        get_default_allowed_hosts,
        is_allowed_host_header,
        should_block_cors_request,
    )

    def listed(flag: str) -> list[str] | None:
        given = [v for v in opts.get(flag, []) if v]
        return [x.strip() for x in with_head_ip(given[-1]).split(",")] if given else None

    if not tracking_uri:
        return ["the head exports no MLFLOW_TRACKING_URI: the links bnsweep prints would not be the server's"]
    link = urllib.parse.urlsplit(with_head_ip(tracking_uri))
    origins, hosts = listed("--cors-allowed-origins"), listed("--allowed-hosts") or get_default_allowed_hosts()
    problems = []
    for origin, host in ((f"{link.scheme}://{link.netloc}", link.netloc), (f"http://{TUNNEL}", TUNNEL)):
        if should_block_cors_request(origin, "POST", origins):
            problems.append(f"MLflow's UI opened at {origin} cannot list runs (its POSTs get 403): "
                            f"--cors-allowed-origins must admit {origin}")
        if not is_allowed_host_header(hosts, host):
            problems.append(f"MLflow refuses the Host {host} (403): --allowed-hosts must admit it")
    return problems


def security_problems(cfg: dict[str, Any]) -> list[str]:
    """Everything that would expose the cluster or weaken it, for a prepared config."""
    problems = ingress_problems(cfg) if cfg["provider"]["type"] == "aws" else []
    head_cmds, worker_cmds = node_commands(cfg)

    head_starts = 0
    for cmd in head_cmds + worker_cmds:
        for args in invocations(cmd, ("ray", "start")):
            opts = options(args)
            hosts = opts.get("--dashboard-host", [])
            if "--head" in opts:
                head_starts += 1
                if not hosts:
                    problems.append("`ray start --head` without an explicit --dashboard-host=127.0.0.1")
            problems += [f"Ray dashboard bound to {h!r}: use --dashboard-host=127.0.0.1 and reach it "
                         "with `ray dashboard cluster.yaml`" for h in hosts if h not in LOOPBACK]
    if not head_starts:
        problems.append("no `ray start --head` among the head's commands")

    env = exports(head_cmds)
    servers = [args for cmd in head_cmds for args in invocations(cmd, ("mlflow", "server"))]
    if not servers:
        problems.append("the head starts no MLflow tracking server (`mlflow server ...`)")
    for args in servers:
        problems += mlflow_problems(args, env)
    if any(invocations(cmd, ("mlflow", "server")) for cmd in worker_cmds):
        problems.append("an MLflow server is started on worker nodes: it belongs on the head")

    for role, cmds in (("head", cfg["head_setup_commands"]), ("worker", cfg["worker_setup_commands"])):
        mode = exports(cmds).get("RAY_AUTH_MODE")
        if mode != "token":
            problems.append(f"{role} nodes do not set RAY_AUTH_MODE=token before `ray start` (got {mode!r})")
    if not any(str(remote).rstrip("/").endswith(".ray/auth_token") for remote in cfg.get("file_mounts", {})):
        problems.append("file_mounts does not ship the Ray auth token (~/.ray/auth_token) to the nodes")
    return problems


# ------------------------------------------------------------------ tests ---

def test_ray_launcher_accepts_the_config(prepared):
    assert prepared["cluster_name"] == "bnsweep"
    assert prepared["provider"]["type"] == "aws"
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["max_workers"] == 0


def test_rays_validation_is_really_applied(raw):
    import jsonschema

    bad = copy.deepcopy(raw)
    bad["no_such_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        launcher_prepare(bad)
    bad = copy.deepcopy(raw)
    del bad["available_node_types"]["ray.worker.gpu"]["resources"]
    with pytest.raises(jsonschema.ValidationError):
        launcher_prepare(bad)


def test_the_config_passes_the_security_checker(prepared):
    assert security_problems(prepared) == []


def test_the_launcher_opens_only_ssh_to_the_world(raw):
    # The rules Ray itself would write for this file: intra-cluster from the group, SSH from anywhere.
    rules = ray_default_inbound_rules(raw["provider"].get("security_group", {}).get("IpPermissions", []))
    open_to_addresses = [r for r in rules if r.get("IpRanges") or r.get("Ipv6Ranges") or r.get("PrefixListIds")]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in open_to_addresses] == [("tcp", 22, 22)]
    assert any(r.get("UserIdGroupPairs") for r in rules)


def test_every_command_list_is_this_files_own(raw):
    # Otherwise Ray's AWS defaults fill in: a nightly Ray wheel and --dashboard-host=0.0.0.0.
    for key in COMMAND_KEYS + ("file_mounts", "head_node_type", "available_node_types", "auth"):
        assert key in raw, key


def test_every_command_is_valid_bash(prepared):
    head, worker = node_commands(prepared)
    for cmd in head + worker:
        result = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{cmd!r}: {result.stderr}"


def _mutate_ingress(rule: dict) -> Callable[[dict], None]:
    def apply(cfg: dict) -> None:
        cfg["provider"].setdefault("security_group", {}).setdefault("IpPermissions", []).append(rule)
    return apply


def _replace_in_commands(old: str, new: str) -> Callable[[dict], None]:
    def apply(cfg: dict) -> None:
        hits = 0
        for key in COMMAND_KEYS:
            for i, cmd in enumerate(cfg.get(key, [])):
                if old in cmd:
                    cfg[key][i] = cmd.replace(old, new)
                    hits += 1
        assert hits, f"mutation target {old!r} not found in cluster.yaml"
    return apply


def _drop(key: str) -> Callable[[dict], None]:
    return lambda cfg: cfg.pop(key)


def _open_port(proto: str, port: int | None, cidr: str = "0.0.0.0/0") -> Callable[[dict], None]:
    rule: dict[str, Any] = {"IpProtocol": proto}
    if port is not None:
        rule.update(FromPort=port, ToPort=port)
    rule["Ipv6Ranges" if ":" in cidr else "IpRanges"] = [{"CidrIpv6" if ":" in cidr else "CidrIp": cidr}]
    return _mutate_ingress(rule)


MLFLOW_HOST = '--host "$BNSWEEP_HEAD_IP"'
DASHBOARD = "--dashboard-host=127.0.0.1"
SQLITE = "sqlite:////home/ubuntu/mlflow/mlflow.db"
WORKER_START = "ray start --address=$RAY_HEAD_IP:6379"

# name: (what the checker must say, the change)
MUTATIONS = {
    "dashboard port to the world": ("security group opens", _open_port("tcp", 8265)),
    "all traffic to the world": ("security group opens", _open_port("-1", None)),
    "GCS to the IPv6 world": ("security group opens", _open_port("tcp", 6379, "::/0")),
    "Ray client port to one address": ("security group opens", _open_port("tcp", 10001, "203.0.113.7/32")),
    "MLflow port to the world": ("security group opens", _open_port("tcp", 5000)),
    "SSH as UDP to the world": ("security group opens", _open_port("udp", 22)),
    "mlflow --host 0.0.0.0": ("MLflow server bound", _replace_in_commands(MLFLOW_HOST, "--host 0.0.0.0")),
    "mlflow --host=0.0.0.0": ("MLflow server bound", _replace_in_commands(MLFLOW_HOST, "--host=0.0.0.0")),
    "mlflow -h ::": ("MLflow server bound", _replace_in_commands(MLFLOW_HOST, "-h ::")),
    "mlflow on a public address": ("MLflow server bound", _replace_in_commands(MLFLOW_HOST, "--host 54.1.2.3")),
    "mlflow allows every host": ("allows every", _replace_in_commands(
        "--port 5000", "--port 5000 --allowed-hosts '*'")),
    "mlflow without security middleware": ("security-middleware", _replace_in_commands(
        "--port 5000", "--port 5000 --disable-security-middleware")),
    "mlflow refuses the printed links' POSTs": ("cannot list runs", _replace_in_commands(
        '--cors-allowed-origins "http://$BNSWEEP_HEAD_IP:5000"', "")),
    "mlflow hosts without the head's address": ("refuses the Host 10.0.0.10:5000", _replace_in_commands(
        '"$BNSWEEP_HEAD_IP:5000,localhost:*,127.0.0.1:*"', '"localhost:*,127.0.0.1:*"')),
    "mlflow hosts without the tunnel": ("refuses the Host localhost:5000", _replace_in_commands(
        '"$BNSWEEP_HEAD_IP:5000,localhost:*,127.0.0.1:*"', '"$BNSWEEP_HEAD_IP:5000"')),
    "mlflow file store": ("backend store", _replace_in_commands(SQLITE, "file:///home/ubuntu/mlruns")),
    "mlflow default backend": ("backend store", _replace_in_commands(f"--backend-store-uri {SQLITE}", "")),
    "mlflow artifacts on the head's disk": ("artifacts go to", _replace_in_commands(
        '"$BNSWEEP_S3/mlflow-artifacts"', "/home/ubuntu/mlartifacts")),
    "no mlflow server": ("no MLflow tracking server", _replace_in_commands("mlflow server", "true")),
    "dashboard on 0.0.0.0": ("dashboard bound", _replace_in_commands(DASHBOARD, "--dashboard-host=0.0.0.0")),
    "dashboard on ::": ("dashboard bound", _replace_in_commands(DASHBOARD, "--dashboard-host ::")),
    "dashboard host left to defaults": ("without an explicit", _replace_in_commands(DASHBOARD, "")),
    "worker dashboard on 0.0.0.0": ("dashboard bound", _replace_in_commands(
        WORKER_START, WORKER_START + " --dashboard-host=0.0.0.0")),
    # Ray's AWS defaults fill in: no MLflow, and (Ray 2.60) --dashboard-host=0.0.0.0.
    "head start commands left to Ray's defaults": ("no MLflow tracking server", _drop("head_start_ray_commands")),
    "token auth disabled": ("RAY_AUTH_MODE=token", _replace_in_commands(
        "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled")),
    "token not shipped": ("auth token", lambda cfg: cfg["file_mounts"].pop("/home/ubuntu/.ray/auth_token")),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_the_checker_rejects_an_unsafe_change(raw, name):
    expected, mutate = MUTATIONS[name]
    cfg = copy.deepcopy(raw)
    mutate(cfg)
    problems = security_problems(launcher_prepare(cfg))
    assert any(expected in p for p in problems), f"{name}: not rejected for the right reason: {problems}"


def test_own_security_groups_are_not_second_guessed(raw):
    # docs/cluster.md "Hardening": with SecurityGroupIds the launcher writes no rules at all.
    cfg = copy.deepcopy(raw)
    for node_type in cfg["available_node_types"].values():
        node_type["node_config"]["SecurityGroupIds"] = ["sg-0123456789abcdef0"]
    assert security_problems(launcher_prepare(cfg)) == []


def test_workers_have_gpus_and_trials_stay_off_the_head(prepared):
    head_type = prepared["head_node_type"]
    assert prepared["available_node_types"][head_type]["resources"].get("CPU") == 0
    workers = {k: v for k, v in prepared["available_node_types"].items() if k != head_type}
    assert workers
    for node_type in workers.values():
        assert node_type["resources"].get("GPU", 0) >= 1
        assert node_type["min_workers"] == 0  # no GPU bills while idle
        assert node_type["max_workers"] <= prepared["max_workers"]


def test_every_node_knows_storage_data_and_tracking(prepared):
    head_cmds, worker_cmds = node_commands(prepared)
    for cmds in (prepared["head_setup_commands"], prepared["worker_setup_commands"]):
        env = exports(cmds)
        assert env["BNSWEEP_STORAGE"].startswith("s3://"), "Tune storage must be reachable from every node"
        assert env["BNSWEEP_DATA_DIR"].startswith("/")
        assert env["MLFLOW_TRACKING_URI"] == "http://$BNSWEEP_HEAD_IP:5000"
    # The URI the driver and workers use is where the server listens.
    (server,) = [args for cmd in head_cmds for args in invocations(cmd, ("mlflow", "server"))]
    opts = options(server)
    assert exports(head_cmds)["MLFLOW_TRACKING_URI"] == f"http://{opts['--host'][0]}:{opts['--port'][0]}"
    # Workers take the head's address from the launcher; the head looks up its own the way Ray does.
    setup = "\n".join(prepared["worker_setup_commands"])
    lookup = "$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')"
    assert f"export BNSWEEP_HEAD_IP=${{RAY_HEAD_IP:-{lookup}}}" in setup
    assert any("load_cifar10" in cmd for cmd in prepared["worker_setup_commands"]), "CIFAR-10 fetched per node"


def test_nodes_run_the_ray_version_this_checkout_uses(prepared):
    import ray

    pins = re.findall(r"ray\[[^\]]*\]==([\w.]+)", " ".join(prepared["worker_setup_commands"]))
    assert pins == [ray.__version__]


def test_the_checkout_is_synced_without_the_local_venv(raw):
    assert raw["file_mounts"]["/home/ubuntu/bnsweep"] == "."
    assert ".gitignore" in raw["rsync_filter"]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".venv/" in ignored or ".venv" in ignored


def test_values_to_change_are_marked(raw):
    text = CLUSTER_YAML.read_text()
    for pattern in (r"region: .*# CHANGE ME", r"ImageId: .*# CHANGE ME", r"export BNSWEEP_S3=.*# CHANGE ME"):
        assert re.search(pattern, text), pattern


def _doc_yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", CLUSTER_DOC.read_text(), re.S)


def test_the_on_premise_example_in_the_docs_is_valid():
    (block,) = [b for b in _doc_yaml_blocks() if "type: local" in b]
    cfg = launcher_prepare(yaml.safe_load(block))
    problems = security_problems(cfg)
    # On premise there is no S3 unless you have one; everything else holds as on AWS.
    assert [p for p in problems if "artifacts go to" not in p] == []


@pytest.mark.slow  # a real `mlflow server` (about 20 s to start)
def test_the_servers_own_flags_let_the_printed_links_list_runs(prepared, tmp_path):
    """cluster.yaml's `mlflow server` security flags on a real server on loopback, asked with
    the Host and Origin a browser sends: from a printed link (http://<head IP>:5000, inside
    the network) and through the SSH tunnel its UI lists runs (a POST); another site's page
    or Host is still refused. Only 127.0.0.1 is ever connected to."""
    from conftest import VENV_BIN, free_port

    head_cmds, _ = node_commands(prepared)
    (server,) = [args for cmd in head_cmds for args in invocations(cmd, ("mlflow", "server"))]
    opts = options(server)
    flags = [word for flag in ("--allowed-hosts", "--cors-allowed-origins") for value in opts.get(flag, [])
             for word in (flag, with_head_ip(value))]
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination",
         str(tmp_path / "artifacts"), *flags],
        stdout=open(tmp_path / "server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc, tmp_path / "server.log")
        link = urllib.parse.urlsplit(with_head_ip(exports(head_cmds)["MLFLOW_TRACKING_URI"])).netloc

        def ask(host: str, origin: str, method: str = "POST") -> tuple[int, str | None]:
            path = "/ajax-api/2.0/mlflow/runs/search" if method == "POST" else "/ajax-api/2.0/mlflow/experiments/get"
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}" + ("" if method == "POST" else "?experiment_id=0"),
                data=b'{"experiment_ids": ["0"]}' if method == "POST" else None, method=method,
                headers={"Host": host, "Origin": origin, "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, r.headers.get("access-control-allow-origin")
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("access-control-allow-origin")

        assert ask(link, f"http://{link}")[0] == 200  # a printed link, from inside the network
        assert ask(TUNNEL, f"http://{TUNNEL}")[0] == 200  # through the tunnel
        assert ask(link, "http://other.example")[0] == 403  # another site's page may not write
        assert ask(link, "http://other.example", "GET") == (200, None)  # nor read: no CORS header for it
        assert ask("other.example:5000", "http://other.example:5000")[0] == 403  # a rebound name
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
