"""The `bnsweep` command: train | run | resume | plan | report | sync.

Expected mistakes (bad value, bad path, missing data, unknown option) end with
one line on stderr and exit code 2 (usage) or 1 (environment), never a traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnsweep.config import EXECUTION_FACTS, EXECUTION_KEYS, REFERENCE
from bnsweep.errors import BnsweepError, UsageError
from bnsweep.formats import measured, number


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _flag_text(key: str, value: Any) -> str:
    if isinstance(REFERENCE[key], bool):
        return _flag(key) if value else "--no-" + key.replace("_", "-")
    return f"{_flag(key)} {value}"


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key, same name with dashes, grouped by kind, its help from the
    config table (unit, source, default); values are checked by make_config."""
    from bnsweep.config import KINDS, TABLE

    for kind in KINDS:
        group = parser.add_argument_group(f"{kind} (defaults: the reference experiment)")
        for key, spec in TABLE.items():
            if spec.kind != kind:
                continue
            # An unset choice (norm) is "unset", not "none", which is one of its values.
            unset = "unset" if spec.choices else "none"
            text = f"{spec.help} (default: {unset if spec.default is None else spec.default})".replace("%", "%%")
            if spec.value_type is bool:
                group.add_argument(_flag(key), dest=key, action=argparse.BooleanOptionalAction, default=None,
                                   help=text)
            else:
                metavar = "|".join(spec.choices) if spec.choices else ("N" if spec.value_type is int else "V")
                group.add_argument(_flag(key), dest=key, default=None, metavar=metavar, help=text)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for key in REFERENCE:
        value = getattr(args, key, None)
        if value is None:
            continue
        if isinstance(value, str) and value.lower() in ("none", "all") and key in ("n_train", "n_val", "data_dir"):
            value = None
        out[key] = value
    if "bn" in out and out.get("norm") is not None and out["bn"] != (out["norm"] == "bn"):
        # One choice (config.norm_of): a set norm decides, so a contradicting --bn would be dropped unsaid.
        raise UsageError(f"{_flag_text('bn', out['bn'])} and --norm {out['norm']} disagree; --norm alone chooses "
                         "the normalisation (bn, bn_scale, gn, ln, none)")
    return out


def _fmt_epoch(m: dict[str, float], epochs: int) -> str:
    mark = "  DIVERGED" if m["diverged"] else ""
    return (f"epoch {m['epoch']:>3}/{epochs}  train_loss {m['train_loss']:.4f}  train_acc {m['train_acc']:.4f}  "
            f"val_loss {m['val_loss']:.4f}  val_acc {m['val_acc']:.4f}  lr {measured(m['scheduled_lr'], 6)}  "
            f"{m['epoch_time_s']:.1f}s  {m['images_per_s']:.0f} train img/s{mark}")


# What may differ when `train --resume` continues a checkpoint: how long it trains,
# and where and how it runs (the execution keys). Any other key would make it a
# different experiment.
RESUME_MAY_CHANGE = ("epochs", *EXECUTION_KEYS)
CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "time_total_s", "history")


def _read_checkpoint(path: str) -> dict[str, Any]:
    from bnsweep.train import load_checkpoint

    if not Path(path).is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        state = load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 — pickle, zip and torch errors alike: not a checkpoint
        raise UsageError(f"{path} is not a readable bnsweep checkpoint ({type(e).__name__}; "
                         "not a PyTorch file, or truncated)") from None
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise UsageError(f"{path} is not a bnsweep checkpoint (no {', '.join(missing)}); "
                         "write one with `bnsweep train --checkpoint PATH`")
    return state


def _resume_config(path: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config a checkpoint was trained with, plus the flags that may change; and its state."""
    from bnsweep.config import make_config, norm_of
    from bnsweep.model import build_model

    state = _read_checkpoint(path)
    saved = state.get("config")
    if saved is None:  # written before checkpoints carried their config: the flags must rebuild the model
        cfg = make_config(overrides)
        try:
            build_model(cfg).load_state_dict(state["model"])
        except RuntimeError as e:
            raise UsageError(f"checkpoint {path} does not fit the model these flags build "
                             f"({str(e).splitlines()[0][:150]}); pass the flags it was trained with") from None
        return cfg, state
    saved = {k: v for k, v in saved.items() if k in REFERENCE}
    # bn and norm are one choice (config.norm_of), compared as one: --norm bn resumes a bn=true run.
    # --bn / --no-bn alone means the study's two arms: BN or none, whatever norm the run had.
    if "bn" in overrides and "norm" not in overrides:
        overrides = {**overrides, "norm": None}
    was, now = norm_of(saved), norm_of(make_config({**saved, **overrides}, consistent=False))
    norm_key = next((k for k in overrides if k in ("bn", "norm")), None) if now != was else None
    changed = [f"{_flag_text(k, v)} (trained with "
               f"{_flag_text(k, saved.get(k)) if k == 'bn' and not saved.get('norm') else f'--norm {was}'})"
               if k == norm_key else f"{_flag_text(k, v)} (trained with {_flag_text(k, saved.get(k))})"
               for k, v in overrides.items()
               if k == norm_key or (k not in (*RESUME_MAY_CHANGE, "bn", "norm")
                                    and make_config({k: v}, consistent=False)[k] != saved.get(k))]
    if changed:
        raise UsageError(f"--resume continues the run in {path}; these flags would change it: "
                         f"{'; '.join(changed)}. Only {', '.join(_flag(k) for k in RESUME_MAY_CHANGE)} may differ")
    return make_config({**saved, **overrides}), state


def _check_writable(path: str) -> None:
    """Fail now, not after the first epoch has trained: save_checkpoint writes PATH.tmp, then renames it."""
    tmp = Path(f"{path}.tmp")
    if Path(path).is_dir():
        raise UsageError(f"cannot write checkpoint {path}: it is a directory")
    try:
        with open(tmp, "ab"):
            pass
        tmp.unlink()
    except OSError as e:
        raise UsageError(f"cannot write checkpoint {path}: {e.strerror}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from bnsweep.config import make_config

    resume = None
    if args.resume:
        cfg, resume = _resume_config(args.resume, config_overrides(args))
        if resume["epoch"] >= cfg["epochs"]:
            print(f"nothing to do: {args.resume} already holds {resume['epoch']} epochs (epochs={cfg['epochs']}); "
                  f"pass --epochs N with N > {resume['epoch']} to train on")
            return 0
    else:
        cfg = make_config(config_overrides(args))
    # A resumed run keeps saving where it came from, unless told to save elsewhere.
    checkpoint = args.checkpoint or args.resume
    if checkpoint:
        _check_writable(checkpoint)

    # At once, before the seconds of loading data and building the model (issue 21: ~15 s blank).
    print(f"bnsweep train: {cfg['model']} bn={cfg['bn']} width={number(cfg['width'])} lr={number(cfg['lr'])} "
          f"batch_size={cfg['batch_size']} epochs={cfg['epochs']} seed={cfg['seed']}")
    print(f"  loading {cfg['dataset']} data and building the model ...", flush=True)
    from bnsweep.train import save_checkpoint, train  # torch's import: seconds

    def on_start(info: dict[str, Any]) -> None:
        ran = ", ".join(f"{k.removeprefix('exec.')} {info[k]}" for k in EXECUTION_FACTS)
        print(f"  ran: {ran}")
        print(f"  device {info['device_name']}, {info['n_params']:,} trainable params, "
              f"{info['n_train_images']:,} train / {info['n_val_images']:,} val images, "
              f"data: {info['dataset_source']} ({info['dataset_fingerprint']})", flush=True)
        if progress is not None:
            progress.n_train = info["n_train_images"]

    saved = [resume["epoch"] if resume and checkpoint == args.resume else 0]  # the epochs `checkpoint` holds

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        if checkpoint:  # saved first: an epoch on the screen is an epoch in the checkpoint
            save_checkpoint(state, checkpoint)
            saved[0] = int(metrics["epoch"])
        if progress is not None:
            progress.close()
        print(_fmt_epoch(metrics, cfg["epochs"]), flush=True)

    progress = None
    if sys.stdout.isatty():
        from bnsweep.train_progress import EpochBar

        progress = EpochBar(cfg["batch_size"], cfg["epochs"])  # its n_train: on_start's
    hooks = {} if progress is None else {"on_step": progress.on_step, "on_epoch_start": progress.on_epoch_start,
                                         "on_validate": progress.on_validate}
    try:
        summary = train(cfg, report=report, resume=resume, on_start=on_start, **hooks)
    except KeyboardInterrupt:  # say what survived, then exit as interrupted
        if checkpoint and saved[0]:
            print(f"\n{checkpoint} holds {saved[0]} epoch(s); continue with: "
                  f"{shlex.join(['bnsweep', 'train', '--resume', checkpoint])}",
                  flush=True)
        else:
            print("\nnothing was saved (pass --checkpoint PATH to keep finished epochs)", flush=True)
        raise
    verdict = "diverged" if summary["diverged"] else "finished"
    print(f"{verdict}: best val_acc {summary['best_val_acc']:.4f} at epoch {summary['best_epoch']}, "
          f"last val_acc {summary['val_acc']:.4f}, {summary['time_total_s']:.1f}s in total")
    return 0


def _sweep_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where and how the sweep runs")
    g.add_argument("--address", help="Ray cluster to join, or auto for the one running on this machine "
                        "(default: $RAY_ADDRESS, else a new local Ray)")
    g.add_argument("--storage", help="results directory or URI, shared by all nodes on a cluster "
                                     "(default: $BNSWEEP_STORAGE, else ./bnsweep_results)")
    g.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    g.add_argument("--no-tracking", action="store_true", help="do not record into MLflow (replay later with sync)")
    g.add_argument("--verbose", action="store_true", help="show Ray's and Tune's own output instead of bnsweep's "
                                                         "table of the trials (else it goes to SWEEP_DIR/logs/)")


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="search-space file, e.g. search_spaces/lr.py, or the name of a study bnsweep "
                                "ships, e.g. lr (an unknown name lists them)")
    p.add_argument("--smoke", action="store_true", help="apply the file's SMOKE overrides (seconds per trial)")
    p.add_argument("--seeds", metavar="S,S,...", help="run every point once per seed, e.g. 0,1,2 (replaces the "
                                                     "file's SEEDS; BN and no-BN trials share each seed)")
    p.add_argument("--confirm-seeds", metavar="N", type=_non_negative_int,
                   help="Optuna: run each arm's best configuration again on N seeds the search did not use, "
                        "and compare the arms on those runs (replaces the file's CONFIRM_SEEDS, default 3; 0: none)")
    g = p.add_argument_group("resources (default: the file's RESOURCES / MAX_CONCURRENT / MAX_FAILURES)")
    g.add_argument("--cpus-per-trial", metavar="N")
    g.add_argument("--gpus-per-trial", metavar="N", help="fractions such as 0.25 let trials share a GPU")
    g.add_argument("--max-concurrent", metavar="N", type=_positive_int)
    g.add_argument("--max-failures", metavar="N", type=_non_negative_int,
                   help="retries of a trial after an infrastructure failure")
    g.add_argument("--experiment", help="MLflow experiment (default: bnsweep-<file stem>)")
    add_config_flags(p)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _study(args: argparse.Namespace):
    from bnsweep.space import check_resource, experiment_problem, load_study
    from bnsweep.studies import resolve_study_file

    seeds = None
    if args.seeds is not None:
        seeds = [s.strip() for s in args.seeds.split(",")]
        if not all(seeds):
            raise UsageError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; got {args.seeds!r}")
    study = load_study(resolve_study_file(args.file), smoke=args.smoke, overrides=config_overrides(args), seeds=seeds,
                       confirm_seeds=args.confirm_seeds)
    if args.experiment is not None and experiment_problem(args.experiment):
        raise UsageError(f"--experiment (the MLflow experiment name) {experiment_problem(args.experiment)}")
    for key, flag in (("cpu", args.cpus_per_trial), ("gpu", args.gpus_per_trial)):
        if flag is not None:
            study.resources[key] = check_resource(key, flag, lambda m, f=key: _raise(f"--{f}s-per-trial: {m}"))
            study.gpu_declared = study.gpu_declared or key == "gpu"
    study.max_concurrent = args.max_concurrent or study.max_concurrent
    if args.max_failures is not None:
        study.max_failures = args.max_failures
    return study


def _raise(message: str):
    raise UsageError(message)


def cmd_run(args: argparse.Namespace) -> int:
    from bnsweep import runner

    study = _study(args)  # all validation happens before Ray starts or anything is written
    return runner.run(study, config_overrides(args), storage=args.storage, address=args.address,
                      tracking_uri=args.tracking_uri, mlflow=not args.no_tracking, experiment=args.experiment,
                      verbose=args.verbose)


def cmd_resume(args: argparse.Namespace) -> int:
    from bnsweep import runner

    return runner.resume(args.sweep_dir, address=args.address, mlflow=not args.no_tracking, verbose=args.verbose)


def cmd_plan(args: argparse.Namespace) -> int:
    from bnsweep import plan

    study = _study(args)
    print(plan.describe(study, probe=not args.no_probe))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from bnsweep import runner

    return runner.sync(args.sweep_dir, tracking_uri=args.tracking_uri)


def cmd_report(args: argparse.Namespace) -> int:
    from bnsweep.analysis.report import build_report
    from bnsweep.tracking import resolve_tracking_uri

    experiment = args.experiment[0] if len(args.experiment) == 1 else args.experiment
    out = build_report(experiment, args.out, tracking_uri=resolve_tracking_uri(args.tracking_uri),
                       parent_run_id=args.sweep, all_sweeps=args.all_sweeps)
    print(f"report written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bnsweep", description="The Batch Normalization study as Ray Tune sweeps.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run a search-space file as a Ray Tune sweep, recorded in MLflow")
    _run_flags(p)
    _sweep_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted sweep without re-running finished trials")
    p.add_argument("sweep_dir", help="the sweep directory `bnsweep run` printed")
    p.add_argument("--address", help="Ray cluster to join, or auto for the one running on this machine "
                        "(default: $RAY_ADDRESS, else a new local Ray)")
    p.add_argument("--no-tracking", action="store_true",
                   help="continue without MLflow, e.g. while its server is down (replay later with sync)")
    p.add_argument("--verbose", action="store_true", help="show Ray's and Tune's own output (else it goes to "
                                                         "SWEEP_DIR/logs/)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("plan", help="trials, epochs, resources and a measured wall-time estimate")
    _run_flags(p)
    p.add_argument("--no-probe", action="store_true", help="skip the timing probe")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("sync", help="replay into MLflow whatever a sweep's results hold that MLflow lacks")
    p.add_argument("sweep_dir")
    p.add_argument("--tracking-uri", help="the store to record into (default: the one `run` recorded into, "
                                          "else $MLFLOW_TRACKING_URI, else ./mlflow.db); a store without "
                                          "this sweep gets it, and sweep.json then points there")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("report", help="figures, tables and the study's claims from an MLflow experiment; "
                                      "two or more: side by side")
    p.add_argument("experiment", nargs="+", help="MLflow experiment name, e.g. bnsweep-lr; name two or more "
                                                 "(bnsweep-lr bnsweep-gn_lr) to draw them on shared axes with "
                                                 "their verdicts in one table")
    p.add_argument("--out", default=None, help="output directory (default: reports/<experiment>, "
                                               "reports/<A>_vs_<B> for several)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    p.add_argument("--sweep", metavar="PARENT_RUN_ID", help="one sweep's parent run (default: the latest sweep)")
    p.add_argument("--all-sweeps", action="store_true", help="pool every sweep of the experiment")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("train", help="one training run, no Ray, no MLflow")
    add_config_flags(p)
    p.add_argument("--checkpoint", metavar="PATH", help="save a checkpoint here after every epoch")
    p.add_argument("--resume", metavar="PATH", help="continue the run a --checkpoint file holds, with its config "
                                                    "(flags may change only --epochs and where it runs); new "
                                                    "epochs are saved back to PATH unless --checkpoint says where")
    p.set_defaults(func=cmd_train)
    return parser


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:

    warnings.formatwarning = _warning_line
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except BnsweepError as e:
        print(f"bnsweep: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bnsweep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bnsweep plan ... | head`: the reader has what it wanted
        sys.stdout = None
        return 0


if __name__ == "__main__":
    sys.exit(main())
