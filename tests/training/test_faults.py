"""Fault injection: kills, corrupt checkpoints, changed configurations, a corrupt cache.

One tiny run (`--dataset synthetic`, 3 epochs) is trained once by the CLI in a
subprocess; every test works on a copy of it. For each fault the test asserts the
outcome (resumed bit-identically / fell back to epoch N with a message / refused with
a message) and that no file of the run was deleted (a bad checkpoint is moved aside to
`checkpoints.corrupt/`, never removed).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from train_problems import linear_params, make_regression, mse_loss

from vi_jax import cli, experiment
from vi_jax.training import CheckpointCorruptError, fit, init_train_state, make_train_step
from vi_jax.training.checkpoint import (
    FAULT_SAVE_DELAY_ENV,
    FAULT_SAVE_PHASE_ENV,
    MANIFEST_NAME,
)

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--dataset", "synthetic", "--epochs", "3", "--batch-size", "100", "--latent", "2",
    "--hidden", "16", "--eval-samples", "8", "--eval-examples", "16", "--eval-every", "3",
    "--no-progress",
]  # fmt: skip


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _train_cmd(out):
    return [sys.executable, "-m", "vi_jax", "train", "--out", str(out), *ARGS]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run_a"
    proc = subprocess.run(_train_cmd(out), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def run(run_a, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_a, out)
    return out


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _assert_nothing_deleted(root: Path, before: set[str], *, except_: tuple[str, ...] = ()):
    """Every file is still there, or was moved with its checkpoint to checkpoints.corrupt/."""
    for rel in before:
        if rel.startswith(except_):
            continue
        moved = rel.replace("checkpoints/", "checkpoints.corrupt/", 1)
        assert (root / rel).exists() or (root / moved).exists(), rel


def _params(run_dir):
    return jax.tree.leaves(experiment.load_run(run_dir)[3])


def _assert_bit_identical(a, b):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _kill_when(proc, condition, timeout=240):
    t0 = time.monotonic()
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "the fault point was never reached"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_after_a_checkpoint_and_during_a_save_resumes_bit_identically(run_a, run):
    ckpts = run / "checkpoints"
    for epoch in (2, 3):  # set up: a run that stopped after epoch 1
        shutil.rmtree(ckpts / str(epoch))
    # 1. SIGKILL right after checkpoint 2 is complete (manifest written).
    delay = {FAULT_SAVE_DELAY_ENV: "120", FAULT_SAVE_PHASE_ENV: "after_manifest"}
    proc = subprocess.Popen(_train_cmd(run), env=_env(**delay), stderr=subprocess.PIPE)
    _kill_when(proc, lambda: (ckpts / "2" / MANIFEST_NAME).exists())
    before = _files(run)
    # 2. SIGKILL during the save of checkpoint 3: orbax has written it, the manifest not.
    delay[FAULT_SAVE_PHASE_ENV] = "before_manifest"
    proc = subprocess.Popen(_train_cmd(run), env=_env(**delay), stderr=subprocess.PIPE)
    _kill_when(proc, lambda: (ckpts / "3").is_dir())
    assert not (ckpts / "3" / MANIFEST_NAME).exists()
    _assert_nothing_deleted(run, before)
    before = _files(run)
    # 3. Rerun: checkpoint 3 is set aside with a message, epoch 3 is trained again.
    proc = subprocess.run(_train_cmd(run), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "vi-jax: warning: Checkpoint of epoch 3" in proc.stderr
    assert "no checksum manifest" in proc.stderr and "epoch 2" in proc.stderr
    assert (run / "checkpoints.corrupt" / "3").is_dir()
    _assert_nothing_deleted(run, before)
    _assert_bit_identical(run, run_a)
    epochs = [
        json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3]


def _largest(step: Path) -> Path:
    return max(
        (p for p in (step / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )


def _overwrite(step: Path) -> str:
    path = _largest(step)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(np.random.default_rng(0).bytes(min(4096, size)))
    assert path.stat().st_size == size
    return "SHA-256 that differs"


def _truncate(step: Path) -> str:
    path = _largest(step)
    os.truncate(path, path.stat().st_size // 2)
    return "bytes, the manifest says"


def _garble_meta(step: Path) -> str:
    path = step / "meta" / "metadata"
    data = bytearray(path.read_bytes())
    data[: min(8, len(data))] = b"#garbled"[: min(8, len(data))]
    path.write_bytes(bytes(data))
    return "meta/metadata has a SHA-256"


def _delete_metadata(step: Path) -> str:
    (step / "state" / "_METADATA").unlink()
    return "state/_METADATA is missing"


CORRUPTIONS = {
    "overwrite_4k": _overwrite,
    "truncate": _truncate,
    "garble_meta": _garble_meta,
    "delete_METADATA": _delete_metadata,
}


@pytest.mark.parametrize("mode", sorted(CORRUPTIONS))
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(run, mode):
    before = _files(run)
    why = CORRUPTIONS[mode](run / "checkpoints" / "3")
    with pytest.warns(UserWarning, match=f"epoch 3 .* corrupt .*{why}.*epoch 2"):
        config, _, _, params, _, epoch = experiment.load_run(run)
    assert epoch == 2
    assert (run / "checkpoints.corrupt" / "3").is_dir()
    assert {"1", "2"} <= set(os.listdir(run / "checkpoints"))
    assert "3" not in os.listdir(run / "checkpoints")
    _assert_nothing_deleted(run, before, except_=("checkpoints/3/state/_METADATA",))


def test_evaluate_on_a_truncated_final_checkpoint_reports_and_falls_back(run, capsys):
    _truncate(run / "checkpoints" / "3")
    assert cli.main(["evaluate", "--run", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("vi-jax: warning: Checkpoint of epoch 3") and "Traceback" not in err
    assert json.loads((run / "evaluation.json").read_text())["epoch"] == 2


def test_no_intact_checkpoint_is_one_error_naming_the_run_and_moves_nothing(run, capsys):
    for epoch in (1, 2, 3):
        _truncate(run / "checkpoints" / str(epoch))
    before = _files(run)
    assert cli.main(["evaluate", "--run", str(run), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vi-jax: error: No intact checkpoint in")
    assert str(run / "checkpoints") in lines[0]
    assert _files(run) == before and not (run / "checkpoints.corrupt").exists()
    with pytest.raises(CheckpointCorruptError, match="No intact checkpoint"):
        experiment.load_run(run)


def test_rerun_with_a_changed_configuration_is_refused_or_recorded(run, capsys):
    saved = (run / "config.json").read_bytes()
    before = _files(run)
    base = ["train", "--out", str(run), *ARGS]
    assert cli.main([*base, "--latent", "3"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vi-jax: error:")
    assert "latent_dim: 2 -> 3" in lines[0] and "--out" in lines[0]
    assert cli.main([*base, "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate: 0.001 -> 0.5" in err and "--allow-config-change" in err
    assert (run / "config.json").read_bytes() == saved  # not overwritten before refusing
    _assert_nothing_deleted(run, before)
    # The explicit option continues the run and records the change in its history.
    assert cli.main([*base, "--lr", "0.5", "--allow-config-change"]) == 0
    history = [json.loads(s) for s in (run / "config_history.jsonl").read_text().splitlines()]
    assert history[-1]["changed"] == {"learning_rate": [0.001, 0.5]}
    assert json.loads((run / "config.json").read_text())["learning_rate"] == 0.5


def test_out_or_run_dir_that_is_a_file_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("not a run")
    assert cli.main(["train", "--out", str(path), *ARGS]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "vi-jax: error: `out`" in lines[0] and str(path) in lines[0]
    optimizer = optax.sgd(0.1)
    step = make_train_step(mse_loss, optimizer)
    state = init_train_state(linear_params(), optimizer)
    with pytest.raises(ValueError, match="`run_dir` .* is an existing file"):
        fit(jax.random.key(0), state, step, make_regression(n=8), num_epochs=1, batch_size=4,
            run_dir=path, progress=False)  # fmt: skip
    assert path.read_text() == "not a run"


def test_corrupt_data_cache_through_the_cli_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VI_JAX_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VI_JAX_OFFLINE", "1")
    cache = tmp_path / "data" / "mnist" / "mnist.npz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(np.random.default_rng(1).bytes(4096))
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "mnist", "--out", str(out), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vi-jax: error: MNIST split `train`")
    assert f"corrupt cache file {cache}, removed; it will be rebuilt" in lines[0]
    assert not out.exists()  # nothing is written for a run that could not start
