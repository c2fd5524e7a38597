"""Data-parallel and multi-host training and evaluation through the CLI, with real processes.

Two processes on 127.0.0.1, each with 2 simulated CPU devices (gloo collectives), train
the same tiny VAE as one process with 4 devices; the 2-process run is interrupted after
epoch 1 and resumed by 2 processes. Simulated devices share this machine's cores: these
tests prove correctness, not speed.

Why a tolerance and not bit-identity across the two layouts: the gradient is the same
sum of the same per-example terms, but one process all-reduces its 4 partial sums inside
XLA while two processes combine 2 + 2 partial sums through gloo; float32 addition is not
associative, so the last bits may differ and then propagate through Adam. The batches,
the random draws (partitionable threefry) and the data are identical.
"""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from vi_jax import cli, experiment

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TRAIN = [
    "--dataset", "synthetic", "--epochs", "2", "--batch-size", "100", "--hidden", "16",
    "--latent", "2", "--eval-samples", "8", "--eval-examples", "40", "--no-progress",
]  # fmt: skip
TIMEOUT = 600


def _env(num_devices):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(args, out):
    """Runs `vi-jax ARGS` as processes 0 and 1 of a 2-process run; returns their stdouts."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vi_jax",
                *args,
                "--out",
                str(out),
                "--devices",
                "all",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                "--init-timeout",
                "60",
            ],
            env=_env(2),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, stderr[-3000:]
            outs.append(stdout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def _launch_all(tmp):
    ref = subprocess.run(
        [sys.executable, str(HERE / "distributed_cli_script.py"), str(tmp / "four"), *TRAIN],
        env=_env(4), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    report = json.loads(ref.stdout.strip().splitlines()[-1])
    # The 2-process run: 1 epoch, then resumed from its checkpoint to 2 epochs.
    first = [a if a != "2" or TRAIN[i - 1] != "--epochs" else "1" for i, a in enumerate(TRAIN)]
    two_first = _two_processes(["train", *first], tmp / "two")
    two_resumed = _two_processes(["train", *TRAIN], tmp / "two")
    return {"tmp": tmp, "ref": report, "two_first": two_first, "two_resumed": two_resumed}


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(argv)
    return rc, err.getvalue()


def _two_processes_match_one_process_with_four_devices(runs):
    tmp = runs["tmp"]
    assert runs["ref"]["train"]["rc"] == 0, runs["ref"]["train"]["stderr"]
    four, two = _history(tmp / "four"), _history(tmp / "two")
    assert [h["epoch"] for h in two] == [1, 2]  # epoch 1 from the first run, 2 resumed
    for a, b in zip(four, two, strict=True):
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
    # Final parameters, restored in this (one-device, one-process) test process.
    *_, p4, _, e4 = experiment.load_run(tmp / "four")
    *_, p2, _, e2 = experiment.load_run(tmp / "two")
    assert e4 == e2 == 2
    leaves4, leaves2 = jax.tree.leaves(p4), jax.tree.leaves(p2)
    assert len(leaves4) == len(leaves2) > 0
    for a, b in zip(leaves4, leaves2, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    # Only process 0 wrote the run's outputs, and every picture exists once.
    metrics = json.loads((tmp / "two" / "metrics.json").read_text())
    assert metrics["machine"]["process_count"] == 2
    assert metrics["machine"]["data_parallel_devices"] == 4
    assert all((tmp / "two" / name).is_file() for name in metrics["pictures"])


def _each_process_holds_only_its_shard(runs):
    for stdouts in (runs["two_first"], runs["two_resumed"]):
        for i, stdout in enumerate(stdouts):
            assert (
                f"process {i}/2: 500 of 1000 training examples resident on its 2 device(s)"
                in stdout
            )
        assert "test log-likelihood" in stdouts[0] and "test log-likelihood" not in stdouts[1]
    # One process with 4 devices keeps a replica per device (local batch gathers).
    assert "process 0/1: 4000 of 1000" in runs["ref"]["train"]["stdout"]


def _sharded_evaluation_equals_unsharded_per_example(runs):
    tmp = runs["tmp"] / "four"
    assert runs["ref"]["evaluate4"]["rc"] == 0 == runs["ref"]["evaluate1"]["rc"]
    ll4, ll1 = np.load(tmp / "ll_devices4.npy"), np.load(tmp / "ll_devices1.npy")
    assert ll4.shape == ll1.shape == (40,) and np.all(np.isfinite(ll1))
    np.testing.assert_allclose(ll4, ll1, rtol=1e-5, atol=1e-5)


def _two_process_checkpoint_evaluates_in_one_process(runs):
    tmp = runs["tmp"]
    rc, err = _cli(["evaluate", "--run", str(tmp / "two"), "--no-progress"])
    assert rc == 0, err
    ll2 = np.load(tmp / "two" / "evaluation_log_likelihood.npy")
    ll4 = np.load(tmp / "four" / "ll_devices1.npy")
    # Same evaluation key and data; the parameters agree to the training tolerance.
    np.testing.assert_allclose(ll2, ll4, rtol=1e-4, atol=1e-3)


def _batch_not_divisible_by_devices_is_refused(runs):
    bad = runs["ref"]["bad_batch"]
    assert bad["rc"] == 2
    lines = bad["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vi-jax: error: `batch_size` (50)"), lines


def test_too_many_devices_is_refused(tmp_path):
    rc, err = _cli(["train", *TRAIN, "--devices", "99", "--out", str(tmp_path)])
    assert rc == 2
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("vi-jax: error: `devices` is 99 but this process has only")


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--num-processes", "2", "--process-id", "2"], "`process_id` must be in [0, 2)"),
        (["--num-processes", "2", "--process-id", "-1"], "`process_id` must be in [0, 2)"),
        (["--num-processes", "2"], "missing `process_id`"),
    ],
)
def test_bad_process_arguments_are_refused_at_once(tmp_path, extra, expected):
    t0 = time.monotonic()
    rc, err = _cli(
        ["train", *TRAIN, "--out", str(tmp_path), "--coordinator", "127.0.0.1:1", *extra]
    )
    assert rc == 2 and expected in err and err.startswith("vi-jax: error: "), err
    assert time.monotonic() - t0 < 5


def test_unreachable_coordinator_is_refused_within_the_timeout(tmp_path):
    port = _free_port()  # nobody listens there
    t0 = time.monotonic()
    rc, err = _cli(
        ["train", *TRAIN, "--out", str(tmp_path), "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", "1", "--init-timeout", "2"]
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert rc == 2 and "did not accept a connection within 2 s" in err, err
    assert 1.5 < elapsed < 10


def test_process_arguments_and_meshes_in_process():
    from vi_jax.training import distributed, sharding

    assert distributed.check_process_args("host:1234", 3, 2) == ("host:1234", 3, 2)
    for address in ("host", "host:0", "host:99999", ":12"):
        with pytest.raises(ValueError, match="`coordinator`"):
            distributed.check_process_args(address, 2, 0)
    with pytest.raises(ValueError, match="`num_processes`"):
        distributed.check_process_args("host:1", 0, 0)
    with pytest.raises(ValueError, match="`auto`"):
        distributed.initialize("host:1", auto=True)
    assert distributed.data_mesh(1) is None and distributed.data_mesh(None) is None
    mesh = distributed.data_mesh("all") if jax.device_count() > 1 else sharding.make_data_mesh(1)
    for bad in (0, "two", 2.0, True):
        with pytest.raises(ValueError, match="`devices`"):
            distributed.data_mesh(bad)
    x = np.arange(12.0, dtype=np.float32).reshape(6, 2)
    rows = sharding.shard_rows(x, mesh)
    np.testing.assert_array_equal(np.asarray(rows), x)
    assert sharding.place_data(rows, mesh) is rows  # already laid out: not copied
    assert sharding.resident_rows(rows) == 6
    assert sharding.resident_rows(sharding.place_data(x, mesh)) == 6 * jax.device_count()


def test_evaluate_model_with_a_mesh_matches_without():
    import distrax
    import jax.numpy as jnp

    from vi_jax.inference.evaluate import evaluate_model
    from vi_jax.training import make_data_mesh
    from vi_jax.types import ModelView

    # A small Gaussian model; the numbers are checked in tests/inference, here the layout.
    def model_fn(params, x):
        q = distrax.MultivariateNormalDiag(x[:, :2] * params, jnp.ones((x.shape[0], 2)))
        prior = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))

        def log_lik(z):
            return distrax.Normal(z.sum(-1, keepdims=True), 1.0).log_prob(x).sum(-1)

        return ModelView(
            log_joint=lambda z: log_lik(z) + prior.log_prob(z),
            posterior=q,
            prior=prior,
            log_likelihood=log_lik,
        )

    x = np.asarray(jax.random.normal(jax.random.key(1), (7, 3)), np.float32)
    kw = dict(num_samples=16, sample_chunk=8, data_chunk=3)
    a = evaluate_model(jax.random.key(2), jnp.float32(0.5), model_fn, x, **kw)
    b = evaluate_model(
        jax.random.key(2), jnp.float32(0.5), model_fn, x, mesh=make_data_mesh(1), **kw
    )
    for name in ("log_likelihood", "elbo", "kl"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-6)


def test_importing_the_cli_leaves_the_backend_for_jax_distributed():
    # jax.distributed.initialize must run before the XLA backend starts; an import-time
    # computation anywhere under vi_jax (e.g. a module-level jnp call) would break it.
    code = (
        "from jax._src import xla_bridge as xb; import vi_jax.cli as c; c._parser(); "
        "import vi_jax.experiment; assert not xb._backends, 'backend started at import'"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(1), cwd=ROOT, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]


def test_two_processes_through_the_cli(tmp_path):
    # One test, not several sharing a module fixture: under pytest-xdist each worker
    # would launch the (expensive) processes again.
    runs = _launch_all(tmp_path)
    _two_processes_match_one_process_with_four_devices(runs)
    _each_process_holds_only_its_shard(runs)
    _sharded_evaluation_equals_unsharded_per_example(runs)
    _two_process_checkpoint_evaluates_in_one_process(runs)
    _batch_not_divisible_by_devices_is_refused(runs)
