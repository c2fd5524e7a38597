"""Smoke runs of every benchmark's `--quick` mode: files written, numbers finite and sane."""

from __future__ import annotations

import json
import math

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


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    assert bench_main(["--all", "--quick", "--out", str(root)]) == 0
    return root


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_quick_outputs(quick_runs, name):
    d = quick_runs / name
    for f in (f"{name}.json", f"{name}.md", "results.md"):
        assert (d / f).is_file() and (d / f).stat().st_size > 0, f
    assert list(d.glob("*.png")), "no plot written"
    payload = json.loads((d / f"{name}.json").read_text())
    env = payload["environment"]
    assert env["versions"]["jax"] and env["device"] and env["cpu_count"]
    assert payload["settings"]["quick"] is True
    nums = list(_finite_numbers(payload["results"]))
    assert nums and all(math.isfinite(v) for v in nums)


def test_training_speed_sane(quick_runs):
    res = json.loads((quick_runs / "training_speed" / "training_speed.json").read_text())["results"]
    for name in ("vi_jax", "hand-written JAX"):
        r = res[name]
        assert 0 < r["q25_s"] <= r["median_s"] <= r["q75_s"]
        assert r["first_epoch_s"] > 0
        # Bernoulli negative ELBO per MNIST image: between 0 and 784 log 2 ~ 543 nats.
        assert all(0 < v < 600 for v in r["loss_per_epoch"])
        assert r["loss_per_epoch"][-1] < r["loss_per_epoch"][0]
    assert res["ratio_vi_jax_over_handwritten"] > 0
