"""Small, fast problems shared by the training tests."""

import jax
import jax.numpy as jnp
import numpy as np


def make_regression(n=192, d=3, seed=0):
    """Linear-regression data {"x": [n, d], "y": [n]} with known weights."""
    kx, kn = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, d))
    w = jnp.arange(1.0, d + 1.0) * jnp.array([1.0, -1.0, 0.5][:d] + [1.0] * max(0, d - 3))
    y = x @ w + 0.3 + 0.05 * jax.random.normal(kn, (n,))
    return {"x": x, "y": y}


def linear_params(d=3):
    return {"w": jnp.zeros(d), "b": jnp.zeros(())}


def mse_loss(params, batch, key):
    """Mean squared error with a little key-dependent noise, so that keys matter."""
    pred = batch["x"] @ params["w"] + params["b"]
    noise = 0.01 * jax.random.normal(key, pred.shape, pred.dtype)
    loss = jnp.mean((pred + noise - batch["y"]) ** 2)
    return loss, {"abs_b": jnp.abs(params["b"])}


def nan_grad_at_step(loss_fn, bad_step):
    """`loss_fn(params, batch, key)` as a step-taking loss whose value stays finite but
    whose gradient is NaN at step `bad_step` (what only a gradient or state check sees)."""

    @jax.custom_jvp
    def poison(x, flag):
        return x

    @poison.defjvp
    def _(primals, tangents):
        (x, flag), (dx, _) = primals, tangents
        return x, jnp.where(flag > 0, jnp.nan, 1.0) * dx

    def with_step(params, batch, key, step):
        loss, aux = loss_fn(params, batch, key)
        return poison(loss, (step == bad_step).astype(loss.dtype)), aux

    return with_step


def jitter(key, batch):
    """A keyed on-device preprocess: small input noise."""
    x = batch["x"]
    return {**batch, "x": x + 0.01 * jax.random.normal(key, x.shape, x.dtype)}


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
