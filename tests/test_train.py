"""train(): the schedule, learning on real CIFAR-10, divergence, checkpoint/resume, the CLI."""

from __future__ import annotations

import copy
import math
import pickle
import re
import subprocess
import sys

import pytest
import torch

from bnsweep.config import EPOCH_METRICS, REFERENCE, ConfigError, lr_at, make_config
from bnsweep.train import load_checkpoint, save_checkpoint, set_lr, train

TINY = {"dataset": "synthetic", "width": 0.0625, "n_train": 200, "n_val": 100, "batch_size": 50, "epochs": 3}


def test_lr_schedule_matches_the_reference_formula_at_every_epoch():
    cfg = make_config()
    for epoch in range(cfg["epochs"]):
        assert lr_at(cfg, epoch) == pytest.approx(0.01 * 0.1 ** math.floor((epoch + 1) / 10))
    assert [lr_at(cfg, e) for e in (0, 8, 9, 18, 19, 29)] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-5])


@pytest.mark.slow  # 4 epochs of training: 17 s on 2 cores
def test_train_reports_the_schedule_it_used():
    seen = []
    train(make_config({**TINY, "epochs": 4, "lr_drop_period": 2, "lr": 0.05}), report=lambda m, s: seen.append(m))
    assert [m["scheduled_lr"] for m in seen] == pytest.approx([0.05, 0.005, 0.005, 0.0005])
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4]
    for m in seen:
        assert set(EPOCH_METRICS) <= set(m)
        assert m["images_per_s"] > 0 and m["step_time_ms"] > 0 and m["epoch_time_s"] > 0


@pytest.mark.slow  # over 5 s on 2 cores
@pytest.mark.parametrize("bn,lr", [(True, 0.1), (False, 0.005)])
def test_short_run_on_real_cifar_learns_above_chance(cifar_dir, bn, lr):
    # The small model (the dropout study's) on 2,000 real images; 400 steps so
    # the BN arm's running statistics have settled (docs/design.md §2). Chance is 0.10.
    # Each arm at a learning rate it trains at (no BN stalls at 0.1: claim 3).
    # Measured on 2 CPU cores: BN 0.36, no BN 0.24-0.27 (1 or 2 threads; no BN at 0.02 varied 0.13-0.24).
    cfg = make_config({"model": "simple", "bn": bn, "width": 0.5, "n_train": 2000, "n_val": 1000,
                       "batch_size": 20, "epochs": 4, "lr": lr, "augment": False, "data_dir": str(cifar_dir)})
    summary = train(cfg)
    assert not summary["diverged"]
    assert summary["best_val_acc"] > 0.2, summary


def test_sgd_steps_equal_keras_across_learning_rate_drops():
    # Keras 2.x SGD (the study's): v = 0.9 v - lr g; p += v. The velocity keeps the old lr.
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, generator=g) for _ in range(7)]
    lrs = [0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    p = torch.zeros(5, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lrs[0], momentum=0.9)
    keras_p, keras_v = torch.zeros(5), torch.zeros(5)
    for grad, lr in zip(grads, lrs):
        set_lr(opt, lr)
        p.grad = grad.clone()
        opt.step()
        keras_v = 0.9 * keras_v - lr * grad
        keras_p = keras_p + keras_v
        torch.testing.assert_close(p.detach(), keras_p)


def test_divergence_is_a_result_not_an_exception():
    # No BN at lr 1e3 on the synthetic set: in fp32 on a CPU the loss becomes NaN within
    # the first epoch. (On an H200 in bf16 the ReLUs die instead: the loss stays at ln 10,
    # finite, which is not divergence; so the device is pinned.)
    seen = []
    summary = train(make_config({**TINY, "bn": False, "lr": 1000.0, "epochs": 5, "device": "cpu"}),
                    report=lambda m, s: seen.append(m))
    assert summary["diverged"] == 1.0
    assert len(seen) < 5, "training must stop once diverged"
    assert seen[-1]["diverged"] == 1.0
    assert 0.0 <= summary["best_val_acc"] <= 1.0


def test_a_model_that_cannot_be_evaluated_any_more_has_diverged():
    # BN's running mean overflowed (NaN): training (batch statistics) goes on finite, evaluation
    # (running statistics) gives NaN. That is divergence too, not a result at chance.
    cfg = make_config({**TINY, "bn": True, "epochs": 2})
    states = []
    train({**cfg, "epochs": 1}, report=lambda m, s: states.append(copy.deepcopy(s)))
    state = states[-1]
    key = next(k for k in state["model"] if k.endswith("running_mean"))
    state["model"][key].fill_(float("nan"))
    seen = []
    summary = train(cfg, report=lambda m, s: seen.append(m), resume=state)
    assert math.isfinite(seen[-1]["train_loss"]) and not math.isfinite(seen[-1]["val_loss"])
    assert seen[-1]["diverged"] == 1.0 and summary["diverged"] == 1.0


@pytest.mark.slow  # over 5 s on 2 cores
def test_checkpoint_restore_continue_equals_uninterrupted(tmp_path):
    cfg = make_config({**TINY, "dropout": 0.3, "epochs": 4})
    full = []
    train(cfg, report=lambda m, s: full.append(m))

    path = tmp_path / "ckpt.pt"
    first = []

    def stop_after_two(m, s):
        first.append(m)
        save_checkpoint(s, path)
        if m["epoch"] == 2:
            raise KeyboardInterrupt  # the process stops here; only the checkpoint survives

    with pytest.raises(KeyboardInterrupt):
        train(cfg, report=stop_after_two)
    rest = []
    train(cfg, report=lambda m, s: rest.append(m), resume=load_checkpoint(path))
    assert [m["epoch"] for m in rest] == [3, 4]
    for a, b in zip(full, first[:2] + rest):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "scheduled_lr"):
            assert a[key] == b[key], (key, a["epoch"])


def test_dropout_and_data_order_draw_from_different_streams():
    # Seeded alike, dropout's masks would reuse the numbers that shuffled and augmented the batch.
    from bnsweep.train import DATA_STREAM, DROPOUT_STREAM, _epoch_seed

    for seed, epoch in [(0, 0), (3, 7)]:
        draws = [torch.rand(8, generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch, stream)))
                 for stream in (DATA_STREAM, DROPOUT_STREAM)]
        assert not torch.equal(*draws)


def test_paired_arms_see_the_same_batches():
    # Same seed -> same initial conv weights (BN layers draw no random numbers).
    from bnsweep.model import build_model

    torch.manual_seed(0)
    a = build_model(make_config({"bn": True, "width": 0.125}))
    torch.manual_seed(0)
    b = build_model(make_config({"bn": False, "width": 0.125}))
    wa = [p for n, p in a.named_parameters() if p.dim() == 4]
    wb = [p for n, p in b.named_parameters() if p.dim() == 4]
    assert all(torch.equal(x, y) for x, y in zip(wa, wb))


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown config key 'lrr'.*'lr'"):
        make_config({"lrr": 0.1})
    for key, value, pattern in [("lr", 0, "lr must be > 0"), ("batch_size", 0, "batch_size must be > 0"),
                                ("batch_size", 60000, "larger than the training set"),
                                ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
                                ("model", "vgg", "model must be one of"),
                                ("epochs", 1.5, "epochs must be a whole number"),
                                ("bn", "maybe", "bn must be true or false"),
                                ("lr_drop_factor", 10, r"lr_drop_factor must be in \(0, 1\]"),
                                ("seed", 2**64, r"seed must be <= 9223372036854775807")]:
        with pytest.raises(ConfigError, match=pattern):
            make_config({key: value})
    assert make_config({"lr": "0.1", "bn": "false"})["lr"] == 0.1
    # An integer's text stays exact: through a float, 2**53 + 1 would become 2**53.
    assert make_config({"seed": "9007199254740993"})["seed"] == 9007199254740993
    assert make_config({"seed": "1e3"})["seed"] == 1000


def test_config_errors_name_the_value_that_applies():
    with pytest.raises(ConfigError, match=r"n_val=5000 \(the default\) leaves no training images of 500"):
        make_config({"dataset": "synthetic", "val_split": "holdout"})
    # The simple model batch-normalises a dense layer: a batch of one image cannot be.
    for overrides in ({"batch_size": 1}, {"n_train": 201, "batch_size": 50}):
        with pytest.raises(ConfigError, match="model=simple with bn needs 2 or more images in every batch"):
            make_config({**TINY, "model": "simple", **overrides})
    make_config({**TINY, "model": "simple", "n_train": 201, "batch_size": 50, "bn": False})
    make_config({**TINY, "model": "simple", "n_train": 202, "batch_size": 50})


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"epoch": 1}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint({"epoch": 2, "unpicklable": lambda: None}, path)  # dies mid-write
    assert load_checkpoint(path) == {"epoch": 1}


def _cli(*args: str, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnsweep.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("args,needle", [
    (["--lr", "0"], "lr must be > 0, got 0"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--batch-size", "0"], "batch_size must be > 0"),
    (["--batch-size", "50001"], "batch_size=50001 is larger than the training set"),
    (["--n-train", "100", "--batch-size", "250"], "batch_size=250 is larger than the training set (100 images)"),
    (["--learning-rate", "0.1"], "unrecognized arguments: --learning-rate"),
    (["--model", "resnet"], "model must be one of inception, simple"),
    (["--device", "gpu0"], "device must be auto, cpu, cuda or cuda:N, got 'gpu0'"),
    (["--resume", "/nonexistent/c.pt"], "checkpoint /nonexistent/c.pt does not exist"),
    (["--checkpoint", "/dev/null/c.pt"], "cannot write checkpoint /dev/null/c.pt"),
    (["--seed", "1e20"], "seed must be <= 9223372036854775807 (2**63 - 1), got 100000000000000000000"),
])
def test_train_cli_bad_values_exit_2_with_one_line(args, needle):
    r = _cli("train", *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow  # over 5 s on 2 cores
def test_train_cli_missing_data_is_a_clear_error(tmp_path):
    r = _cli("train", "--data-dir", str(tmp_path / "nowhere"), "--no-download")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "nowhere" in r.stderr
    r = _cli("train", "--data-dir", str(tmp_path / ("a" * 300)), "--no-download")  # a name too long to stat
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "cannot read the data folder" in r.stderr


@pytest.mark.slow  # over 5 s on 2 cores
def test_train_cli_runs_checkpoints_and_resumes(tmp_path):
    ckpt = tmp_path / "c.pt"
    args = ["--dataset", "synthetic", "--width", "0.0625", "--n-train", "200", "--n-val", "100", "--batch-size", "50"]
    r = _cli("train", *args, "--epochs", "1", "--checkpoint", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert "epoch   1/1" in r.stdout and "best val_acc" in r.stdout
    r = _cli("train", *args, "--epochs", "2", "--resume", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert "epoch   2/2" in r.stdout and "epoch   1/2" not in r.stdout
    assert load_checkpoint(ckpt)["epoch"] == 2  # a resumed run saves back to the file it came from
    r = _cli("train", "--epochs", "3", "--resume", str(ckpt))  # the checkpoint knows its config
    assert r.returncode == 0, r.stderr
    assert "synthetic" in r.stdout and "epoch   3/3" in r.stdout and "epoch   2/3" not in r.stdout
    r = _cli("train", "--epochs", "3", "--resume", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stdout and "holds 3 epochs" in r.stdout and "epoch" not in r.stdout.split("nothing")[0]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow  # over 5 s on 2 cores
def test_train_cli_ctrl_c_says_what_was_saved(tmp_path):
    import signal

    ckpt = tmp_path / "c.pt"
    args = ["--dataset", "synthetic", "--width", "0.0625", "--n-train", "200", "--n-val", "100",
            "--batch-size", "50", "--epochs", "50", "--checkpoint", str(ckpt)]
    proc = subprocess.Popen([sys.executable, "-m", "bnsweep.cli", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait for the first epoch to be saved
        if line.startswith("epoch   1/50"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    saved = load_checkpoint(ckpt)["epoch"]
    assert f"holds {saved} epoch(s); continue with: bnsweep train --resume {ckpt}" in out, out


@pytest.mark.slow  # over 5 s on 2 cores
@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
def test_train_cli_device_not_here_and_checkpoints_that_do_not_fit(tmp_path):
    args = ["--dataset", "synthetic", "--width", "0.0625", "--n-train", "100", "--n-val", "100", "--batch-size", "50"]
    r = _cli("train", *args, "--device", "cuda")
    assert r.returncode == 1 and "CUDA is not available" in r.stderr and "Traceback" not in r.stderr
    ckpt = tmp_path / "c.pt"
    assert _cli("train", *args, "--epochs", "1", "--checkpoint", str(ckpt)).returncode == 0
    (tmp_path / "garbage.pt").write_text("not a checkpoint")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    for path, flags, needle in [
            (ckpt, ["--no-bn", "--lr", "0.5"], "--no-bn (trained with --bn); --lr 0.5 (trained with --lr 0.01)"),
            (tmp_path / "garbage.pt", [], "is not a readable bnsweep checkpoint"),
            (tmp_path / "other.pt", [], "is not a bnsweep checkpoint (no model")]:
        r = _cli("train", "--resume", str(path), *flags)
        assert r.returncode == 2 and needle in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_every_config_key_is_a_cli_flag():
    r = _cli("train", "--help")
    for key in REFERENCE:
        flag = "--" + key.replace("_", "-")
        assert flag in r.stdout, flag


def test_a_cpu_run_reports_what_it_executed_not_what_was_asked():
    # cuda_graphs and fused_bn_relu are asked for; a CPU runs neither (tests/test_cpu_path.py:
    # autocast and the memory format).
    from bnsweep.config import EXECUTION_FACTS

    seen = {}
    cfg = make_config({"dataset": "synthetic", "width": 0.0625, "epochs": 1, "n_train": 100, "n_val": 50,
                       "batch_size": 50, "device": "cpu", "fused_bn_relu": True, "amp": "none"})
    assert cfg["cuda_graphs"]
    train(cfg, on_start=seen.update)
    assert {k: seen[k] for k in EXECUTION_FACTS} == {
        "exec.device": "cpu", "exec.autocast": "none", "exec.memory_format": "channels_last",
        "exec.cuda_graphs": "false", "exec.pool_kernel": "pytorch", "exec.bn_kernel": "pytorch",
        "exec.triton": "none"}
    train({**cfg, "bn": False}, on_start=seen.update)
    assert seen["exec.bn_kernel"] == "none"


@pytest.mark.slow  # over 5 s on 2 cores
def test_train_shows_its_progress_on_a_terminal(tmp_path):
    # On a terminal (a pseudo-terminal here): its header before the data loads, then per epoch
    # a bar over its training images and one over its validation images, each labelled with
    # the epoch; the bar's images/s and the epoch line's are one measure, named alike. Into a
    # pipe, only the lines (the other CLI tests read those).
    from conftest import bnsweep_env, on_terminal

    code, text = on_terminal(["train", "--dataset", "synthetic", "--width", "0.0625", "--epochs", "1", "--n-train",
                              "100", "--n-val", "50", "--batch-size", "10", "--eval-batch-size", "10", "--device",
                              "cpu"], bnsweep_env(), tmp_path, timeout=300)
    assert code == 0, text[-2000:]
    assert text.index("bnsweep train:") < text.index("loading synthetic data") < text.index("  ran:"), text[:2000]
    bar_rates = re.findall(r"epoch 1/1 train: +\d+%\|.*?, ([\d,]+) train img/s, loss \d", text)
    assert re.search(r"epoch 1/1 validate: +100%\|.*\| 50\.?0? ?/50\.?0? img", text), text[-3000:]
    line = re.search(r"epoch   1/1 .* (\d+) train img/s", text)
    assert bar_rates and line, text[-3000:]
    # Both count the training images over the seconds since the epoch began; they part only
    # by what happens between the last step and the epoch's clock reading (one loss sync).
    bar, epoch_line = float(bar_rates[-1].replace(",", "")), float(line.group(1))
    assert epoch_line / 1.5 <= bar <= epoch_line * 1.5, (bar, epoch_line)
