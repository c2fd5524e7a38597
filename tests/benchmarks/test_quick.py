"""Smoke runs of every benchmark's `--quick` mode: files written, numbers finite and sane."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.__main__ import BENCHMARKS
from benchmarks.__main__ import main as bench_main


def _finite_numbers(obj):
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _finite_numbers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _finite_numbers(v)


def _run_quick(name, root):
    assert bench_main([name, "--quick", "--out", str(root / name)]) == 0
    return root


def _check_outputs(root, name):
    d = root / name
    for f in (f"{name}.json", f"{name}.md", "results.md"):
        assert (d / f).is_file() and (d / f).stat().st_size > 0, f
    assert list(d.glob("*.png")), "no plot written"
    payload = json.loads((d / f"{name}.json").read_text())
    env = payload["environment"]
    assert env["versions"]["jax"] and env["device"] and env["cpu_count"]
    assert payload["settings"]["quick"] is True
    nums = list(_finite_numbers(payload["results"]))
    assert nums and all(math.isfinite(v) for v in nums)


def _check_training_speed_sane(quick_runs):
    res = json.loads((quick_runs / "training_speed" / "training_speed.json").read_text())["results"]
    for name in ("vi_jax", "hand-written JAX"):
        r = res[name]
        assert 0 < r["q25_s"] <= r["median_s"] <= r["q75_s"]
        assert r["first_epoch_s"] > 0 and r["first_epoch_cpu_s"] > 0
        # Bernoulli negative ELBO per MNIST image: between 0 and 784 log 2 ~ 543 nats.
        assert all(0 < v < 600 for v in r["loss_per_epoch"])
        assert r["loss_per_epoch"][-1] < r["loss_per_epoch"][0]
    assert res["ratio_vi_jax_over_handwritten"] > 0
    assert res["cpu_ratio_vi_jax_over_handwritten"] == pytest.approx(
        res["vi_jax"]["cpu_median_s"] / res["hand-written JAX"]["cpu_median_s"], rel=1e-9
    )
    for r in (res, res["iwae_model"]):
        # The per-step-checked leg trains the same model from the same start with the same
        # keys: while every step is finite where the check runs changes nothing.
        default, step_checked = r["vi_jax"], r["vi_jax, check='step'"]
        np.testing.assert_allclose(
            step_checked["loss_per_epoch"], default["loss_per_epoch"], rtol=1e-4
        )
        assert r["guard_cost"]["paired_ratio"] > 0 and r["guard_cost"]["paired_cpu_ratio"] > 0


def _check_throughput_numpyro_sane(quick_runs):
    payload = json.loads(
        (quick_runs / "throughput_numpyro" / "throughput_numpyro.json").read_text()
    )
    res, settings = payload["results"], payload["settings"]
    try:
        import numpyro  # noqa: F401

        has_numpyro = True
    except ImportError:
        has_numpyro = False
    # numpyro is in the dev extra: where it imports, the NumPyro leg must have run.
    assert res["numpyro_available"] is has_numpyro
    legs = ("vi_jax", "numpyro") if has_numpyro else ("vi_jax",)
    cases = {(c["objective"], c["K"]): c for c in res["cases"]}
    ks = settings["K"]
    assert set(cases) == {("elbo", k) for k in ks} | {("iwae", k) for k in ks if k >= 2}
    # Negative bound per binary 784-pixel image at the untrained initialisation: logits
    # near 0 give about 784 log 2 ~ 543 nats, plus a small KL.
    upper = 784 * math.log(2) + 50
    for c in cases.values():
        # The noise A/B leg ran beside the library's and computes the same bound.
        noise = c["vi_jax (jax.random.normal noise)"]
        se = math.hypot(noise["loss_se"], c["vi_jax"]["loss_se"])
        assert abs(noise["loss_mean"] - c["vi_jax"]["loss_mean"]) < 5 * se, c
        ab = c["noise_ab_time_ratio"]
        assert 0 < ab["q25"] <= ab["median"] <= ab["q75"]
        for leg in legs:
            r = c[leg]
            assert r["evals_per_s"] > 0 and r["first_call_s"] > 0
            assert 0 < r["q25_s"] <= r["median_s"] <= r["q75_s"]
            assert r["evals_per_s"] == pytest.approx(1.0 / r["median_s"])
            assert 0 < r["loss_mean"] < upper and r["loss_se"] > 0
            assert r["dot_ceiling"]["num_dots"] >= 9 and 0 < r["fraction_of_dot_ceiling"] < 5
        if has_numpyro:
            vj, npy = c["vi_jax"], c["numpyro"]
            ratio = c["ratio_vi_jax_over_numpyro"]
            assert ratio > 0
            assert ratio == pytest.approx(vj["evals_per_s"] / npy["evals_per_s"], rel=1e-9)
            assert c["cpu_ratio_vi_jax_over_numpyro"] == pytest.approx(
                npy["cpu_median_s"] / vj["cpu_median_s"], rel=1e-9
            )
            assert len(vj["cpu_times_s"]) == len(vj["times_s"]) and min(vj["cpu_times_s"]) >= 0
            # Same model, same objective: the means over independent keys agree within MC error.
            se = math.hypot(vj["loss_se"], npy["loss_se"])
            assert abs(vj["loss_mean"] - npy["loss_mean"]) < 5 * se, c
        else:
            assert "numpyro" not in c and "ratio_vi_jax_over_numpyro" not in c
    # L_K >= ELBO: the IWAE loss is not above the ELBO loss at the same K.
    for (objective, k), c in cases.items():
        if objective == "iwae":
            for leg in legs:
                e, i = cases[("elbo", k)][leg], c[leg]
                assert i["loss_mean"] < e["loss_mean"] + 5 * math.hypot(i["loss_se"], e["loss_se"])
    # K = 5 ran chunked (forced at this size) beside the same leg on all K at once, and
    # both compute the same bound.
    for (_, k), c in cases.items():
        assert (c["sample_chunk"] is not None) == (k == 5)
        if k == 5:
            ab, whole = c["chunk_ab_time_ratio"], c["vi_jax (all K at once)"]
            assert 0 < ab["q25"] <= ab["median"] <= ab["q75"] and whole["evals_per_s"] > 0
            se = math.hypot(c["vi_jax"]["loss_se"], whole["loss_se"])
            assert abs(c["vi_jax"]["loss_mean"] - whole["loss_mean"]) < 5 * se


def _check_iwae_table_sane(quick_runs, capsys):
    d = quick_runs / "iwae_table"
    rows = json.loads((d / "iwae_table.json").read_text())["results"]["rows"]
    assert {r["cell"] for r in rows} == {"vae2-k1", "iwae_dreg-k5"}
    for r in rows:
        # A Bernoulli NLL per MNIST image lies in (0, 784 log 2 ~ 543]; the quick run is far
        # from the paper's ~85 nats, and is marked as not comparable.
        assert 60 < r["our NLL"] < 543 and r["± se"] > 0
        assert r["our - paper"] == pytest.approx(r["our NLL"] - r["paper NLL"])
        assert 0 <= r["our AU"] <= (150 if r["cell"] == "vae2-k1" else 50) and r["passes"] == 2
        assert r["verdict"] == "not the full protocol"
        assert r["test ELBO"] <= -r["our NLL"] + 4 * r["± se"] + 1.0
    for cell in ("vae2-k1", "iwae_dreg-k5"):  # the cells start at the mean image's logit
        config = json.loads((d / cell / "metrics.json").read_text())["config"]
        assert config["decoder_bias"] == "mean", cell
    paper = {r["cell"]: (r["paper NLL"], r["paper AU"]) for r in rows}
    assert paper == {"vae2-k1": (85.33, None), "iwae_dreg-k5": (85.54, 22)}
    assert {r["cell"]: r["objective"] for r in rows}["vae2-k1"] == "VAE 2-layer"
    # Run again: the finished cells are reused, not retrained.
    from benchmarks import iwae_table

    iwae_table.main(["--quick", "--out", str(d), "--no-progress"])
    assert capsys.readouterr().out.count("not retrained") == 2


def test_throughput_cpus_pins_before_jax_and_refuses_after(capsys):
    import subprocess
    import sys

    from benchmarks import throughput_numpyro

    # JAX is running in this process: pinning now would not resize XLA's thread pool.
    with pytest.raises(SystemExit):
        throughput_numpyro.main(["--quick", "--cpus", "1"])
    assert "before JAX starts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        throughput_numpyro.main(["--quick", "--cpus", "0"])
    code = (
        "import argparse, os, sys; from benchmarks.throughput_numpyro import pin_cpus; "
        "pin_cpus(1, argparse.ArgumentParser()); "
        "print(len(os.sched_getaffinity(0)), 'jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]


def test_iwae_table_refusals(tmp_path):
    from benchmarks import iwae_table

    with pytest.raises(SystemExit):
        iwae_table.main(["--passes", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        iwae_table.main(["--cell", "vae-k7", "--out", str(tmp_path)])
    # A folder that holds another configuration is refused before any training.
    (tmp_path / "vae-k1").mkdir()
    (tmp_path / "vae-k1" / "config.json").write_text(json.dumps({"seed": 99}))
    with pytest.raises(SystemExit, match="another configuration"):
        iwae_table.main(["--quick", "--cell", "vae-k1", "--out", str(tmp_path)])
    # A cell trained before the mean-image bias (saved with a zero one) is not resumed.
    import dataclasses

    cell = iwae_table.cell_config("vae2-k1", quick=True, passes=None, seed=0)
    assert cell.decoder_bias == "mean"
    (tmp_path / "vae2-k1").mkdir()
    old = dataclasses.asdict(dataclasses.replace(cell, decoder_bias="zero"))
    (tmp_path / "vae2-k1" / "config.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="another configuration"):
        iwae_table.main(["--quick", "--cell", "vae2-k1", "--out", str(tmp_path)])


def _check_families_sane(quick_runs):
    res = json.loads((quick_runs / "families" / "families.json").read_text())["results"]
    banana = res["banana"]
    # quadrature against the closed form log Z = 2
    assert abs(banana["log_z_quadrature"] - banana["log_z_exact"]) < 1e-3
    for stats in banana["families"].values():
        # KL(q || p) >= 0 up to 4 Monte Carlo standard errors
        assert stats["kl"] > -4 * stats["elbo_stderr"]
    # The MNIST leg (synthetic data under --quick): q* lives in each encoder's own family.
    mnist = res["mnist"]["families"]
    assert mnist["diag"]["gaps"]["family"] == "meanfield"
    assert mnist["iaf"]["gaps"]["family"] == "iaf"
    for r in mnist.values():
        assert r["test"]["elbo"] <= r["test"]["log_likelihood"] + 4 * r["test"]["elbo_stderr"]
    assert mnist["iaf"]["vs_diag"]["elbo_gain_stderr"] > 0


def _check_training_speed_roofline_and_iwae_model(quick_runs):
    res = json.loads((quick_runs / "training_speed" / "training_speed.json").read_text())["results"]
    assert res["peak_matmul"]["flops_per_s"] > 0
    for r in (res, res["iwae_model"]):
        assert r["first_epoch_ratio"] > 0 and r["first_epoch_cpu_ratio"] > 0
        for name in ("vi_jax", "hand-written JAX"):
            # FLOPs per epoch from XLA's cost analysis: at least the decoder's output layer.
            assert r[name]["flops_per_call"] > 2 * 400 * 784 * 128
            assert 0 < r[name]["fraction_of_peak"] < 10
            assert r[name]["median_s_per_step"] > 0
            # The shape-matched ceiling replays every product of the step (forward and
            # backward: at least 3 per dense layer of the encoder's and decoder's).
            assert r[name]["dot_ceiling"]["num_dots"] >= 9
            # ... and its products are most of XLA's FLOP count of the step, never more.
            step_flops = r[name]["flops_per_call"] / r[name]["num_steps"]
            assert 0.5 * step_flops < r[name]["dot_ceiling"]["dot_flops"] <= step_flops
            assert 0 < r[name]["fraction_of_dot_ceiling"] < 5


def _check_evaluation_sane(quick_runs):
    res = json.loads((quick_runs / "evaluation" / "evaluation.json").read_text())["results"]
    legs = res["legs"]
    assert set(legs) == {
        "vi_jax",
        "vi_jax (sample_chunk 500)",
        "vi_jax (jax.random.normal noise)",
        "hand-written (jax.nn.softplus)",
        "hand-written (max+log1p)",
        "hand-written (row log-lik)",
    }
    lls = [leg["mean_log_likelihood"] for leg in legs.values()]
    # Same model, same images, K = 100 each: the estimates agree to a fraction of a nat.
    assert max(lls) - min(lls) < 1.0 and all(-600 < v < 0 for v in lls)
    for leg in legs.values():
        assert leg["images_per_s"] > 0 and leg["chunk_program_memory_bytes"] > 0
        assert leg["full_test_set_s"] == pytest.approx(10_000 / leg["images_per_s"])
        assert 0 < leg["fraction_of_dot_ceiling"] < 5
    assert res["dot_ceiling"]["num_dots"] >= 2 and res["dots_only_rep_s"] > 0
    assert res["ratio_vi_jax_over_handwritten_time"] > 0
    for name in ("row_loglik_ab_time_ratio", "chunk_ab_time_ratio", "noise_ab_time_ratio"):
        ab = res[name]
        assert 0 < ab["q25"] <= ab["median"] <= ab["q75"]


def test_dot_ceiling_counts_every_product():
    import jax
    import jax.numpy as jnp

    from benchmarks import common

    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))

    def f(a, b):
        # A scan body runs 3 times; of a cond's branches the heavier one counts.
        y, _ = jax.lax.scan(lambda c, _: (c @ jnp.ones((4, 4)), None), a @ b, None, length=3)
        return jax.lax.cond(
            y.sum() > 0, lambda y: y @ jnp.ones((4, 32)), lambda y: jnp.zeros((8, 32)), y
        )

    got = common.dot_ceiling(jax.jit(f), a, b, reps=2, target_s=0.001)
    assert got["num_dots"] == 1 + 3 + 1
    assert got["dot_flops"] == 2 * (8 * 16 * 4 + 3 * 8 * 4 * 4 + 8 * 4 * 32)
    assert got["dot_s"] > 0 and got["dot_flops_per_s"] > 0
    # value_and_grad of a product: the forward one and the two transposed ones.
    grad = jax.grad(lambda a, b: jnp.sum(jnp.tanh(a @ b)), (0, 1))
    assert common.dot_ceiling(grad, a, b, reps=2, target_s=0.001)["num_dots"] == 3


def test_gpu_suite_helpers():
    from benchmarks import gpu_suite

    got = gpu_suite.extrapolate_passes([10.0, 2.0, 4.0, 3.0])
    assert got["median_pass_s"] == 3.0 and got["full_schedule_s"] == 10.0 + 3.0 * 3279
    assert gpu_suite.extrapolate_passes([5.0])["full_schedule_s"] == 5.0 * 3280
    with pytest.raises(ValueError, match="`pass_times`"):
        gpu_suite.extrapolate_passes([])
    cmd = gpu_suite.install_command("wheels")
    assert cmd[-4:] == ["install", "--no-index", "--find-links", "wheels"]
    with pytest.raises(SystemExit):
        gpu_suite.main(["--parts", "nope"])


def _check_gpu_suite_headline(quick_runs, part):
    """The suite's summary line for a part, from the results its quick run wrote."""
    from benchmarks import gpu_suite

    res = json.loads((quick_runs / part / f"{part}.json").read_text())["results"]
    (line, *_) = gpu_suite._headline(part, res)
    assert line.startswith(part)


def test_gpu_suite_quick_iwae_cell(tmp_path):
    # The one part of the suite that no other quick run covers: passes timed, extrapolated.
    from benchmarks.__main__ import main

    assert main(["gpu_suite", "--quick", "--parts", "iwae_cell", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "gpu_suite.json").read_text())
    cell = payload["results"]["parts"]["iwae_cell"]
    assert cell["passes_timed"] == 2 and cell["full_schedule_s"] > cell["median_pass_s"] > 0
    assert payload["results"]["device"] and payload["results"]["headlines"]


# One test per benchmark (its quick run and every check of it), so that pytest-xdist
# spreads the benchmarks over the workers and none runs twice.
CHECKS = {
    "training_speed": (_check_training_speed_sane, _check_training_speed_roofline_and_iwae_model),
    "throughput_numpyro": (_check_throughput_numpyro_sane,),
    "iwae_table": (_check_iwae_table_sane,),
    "families": (_check_families_sane,),
    "evaluation": (_check_evaluation_sane,),
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_quick(tmp_path, capsys, name):
    root = _run_quick(name, tmp_path)
    _check_outputs(root, name)
    for check in CHECKS.get(name, ()):
        check(root, capsys) if check is _check_iwae_table_sane else check(root)
    if name in ("training_speed", "throughput_numpyro", "evaluation"):
        _check_gpu_suite_headline(root, name)
