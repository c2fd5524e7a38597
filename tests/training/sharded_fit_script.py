"""Run in a subprocess by test_sharding.py with 8 host devices; prints one JSON line.

XLA_FLAGS must be set before jax is imported, hence a separate process.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from train_problems import jitter, make_regression, nan_grad_at_step  # noqa: E402

from vi_jax.training import (  # noqa: E402
    fit,
    init_train_state,
    make_data_mesh,
    make_epoch_fn,
    make_train_step,
    shard_batch,
)


def mlp_loss(params, batch, key):
    h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    pred = h @ params["w2"] + params["b2"]
    # Per-example noise from the step key: partitionable RNG gives the same draws sharded.
    noise = 0.01 * jax.random.normal(key, pred.shape, pred.dtype)
    loss = jnp.mean((pred + noise - batch["y"]) ** 2)
    return loss, {"pred_mean": jnp.mean(pred)}


def main():
    out = {"num_devices": jax.device_count()}
    data = make_regression(n=256)
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        "w1": 0.5 * jax.random.normal(k1, (3, 16)),
        "b1": jnp.zeros(16),
        "w2": 0.5 * jax.random.normal(k2, (16,)),
        "b2": jnp.zeros(()),
    }
    opt = optax.adam(0.02)
    state = init_train_state(params, opt)
    step = make_train_step(mlp_loss, opt)
    kw = dict(num_epochs=3, batch_size=32, preprocess=jitter, progress=False)
    results = {}
    for name, mesh in (("none", None), ("one", make_data_mesh(1)), ("eight", make_data_mesh(8))):
        results[name] = fit(jax.random.key(7), state, step, data, mesh=mesh, **kw)
    ref = results["none"]
    for name in ("one", "eight"):
        diffs = jax.tree.map(
            lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
            results[name].state.params,
            ref.state.params,
        )
        out[f"max_param_diff_{name}"] = max(jax.tree.leaves(diffs))
        out[f"loss_{name}"] = [r["loss"] for r in results[name].history]
    out["final_step_eight"] = int(results["eight"].state.step)
    out["params_sharding_eight"] = str(results["eight"].state.params["w1"].sharding.spec)
    out["params_devices_eight"] = len(results["eight"].state.params["w1"].sharding.device_set)

    # The compiled epoch is data parallel: the gradient is all-reduced across devices.
    mesh = make_data_mesh(8)
    epoch = make_epoch_fn(step, batch_size=32, num_examples=256, mesh=mesh, donate=False)
    hlo = epoch.lower(state, data, jax.random.key(0)).compile().as_text()
    out["has_all_reduce"] = "all-reduce" in hlo

    # A NaN gradient behind a finite loss at step 3, data parallel: check="epoch" finds it
    # in the state at the epoch's end and reruns guarded, to check="step"'s result.
    bad_step = make_train_step(nan_grad_at_step(mlp_loss, 3), opt, with_step=True)
    runs = {}
    for check in ("epoch", "step"):
        epoch = make_epoch_fn(bad_step, batch_size=32, num_examples=256, mesh=mesh, check=check)
        runs[check] = epoch(jax.tree.map(jnp.copy, state), data, jax.random.key(3))
    (s_e, m_e), (s_s, m_s) = runs["epoch"], runs["step"]
    out["nan_grad"] = {
        "all_finite": [bool(m_e.all_finite), bool(m_s.all_finite)],
        "steps": [int(s_e.step), int(s_s.step)],
        "finite": np.asarray(m_e.metrics["finite"]).tolist(),
        "states_equal": all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree.leaves(s_e), jax.tree.leaves(s_s), strict=True)
        ),
    }

    refusals = {}
    for label, call in (
        ("batch", lambda: make_epoch_fn(step, batch_size=12, num_examples=256, mesh=mesh)),
        (
            "remainder",
            lambda: make_epoch_fn(
                step, batch_size=48, num_examples=260, drop_remainder=False, mesh=mesh
            ),
        ),
        (
            "fit",
            lambda: fit(
                jax.random.key(0),
                state,
                step,
                data,
                num_epochs=1,
                batch_size=20,
                mesh=mesh,
                progress=False,
            ),
        ),  # fmt: skip
        ("shard_batch", lambda: shard_batch({"x": jnp.ones((12, 2))}, mesh)),
    ):
        try:
            call()
            refusals[label] = None
        except ValueError as err:
            refusals[label] = str(err)
    out["refusals"] = refusals
    sharded = shard_batch({"x": jnp.ones((16, 2))}, mesh)["x"]
    out["shard_batch_shards"] = len(sharded.addressable_shards)
    out["shard_batch_shard_shape"] = list(sharded.addressable_shards[0].data.shape)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
