"""`chunk_log_joint` and `default_log_joint_chunk`: same values and gradients, chunked."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.estimators import (
    chunk_log_joint,
    default_log_joint_chunk,
    elbo_pathwise,
    iwae_dreg,
    make_linear_gaussian,
)
from vi_jax.estimators.chunking import largest_divisor


@pytest.fixture(scope="module")
def lg():
    model = make_linear_gaussian(jax.random.key(0), data_dim=5, latent_dim=3, noise_scale=0.7)
    x, _ = model.sample(jax.random.key(1), 4)
    return model, x


@pytest.mark.parametrize("chunk", [1, 4, 5, 12, 40])  # divides K, leaves a remainder, >= K
def test_chunked_log_joint_has_the_same_values_and_gradients(lg, chunk):
    model, x = lg
    k = 12
    z = jax.random.normal(jax.random.key(2), (k, x.shape[0], 3))
    log_joint = model.log_joint_fn(x)
    chunked = chunk_log_joint(log_joint, chunk)
    np.testing.assert_allclose(chunked(z), log_joint(z), rtol=1e-5)
    g, g_chunked = (
        jax.grad(lambda z, f=f: jnp.sum(jnp.sin(f(z))))(z) for f in (log_joint, chunked)
    )
    # float32: the chunked products sum in another order
    np.testing.assert_allclose(g_chunked, g, rtol=1e-4, atol=1e-4)
    # forward mode too
    t = jnp.ones_like(z)
    np.testing.assert_allclose(
        jax.jvp(chunked, (z,), (t,))[1], jax.jvp(log_joint, (z,), (t,))[1], rtol=1e-4, atol=1e-4
    )


def test_estimators_see_no_difference(lg):
    """Same key, same samples: a chunked log joint gives the estimator's bound and grads."""
    model, x = lg
    mean, cov = model.posterior_params(x)

    def bound(estimator, loc, chunk):
        q = distrax.MultivariateNormalDiag(loc, jnp.sqrt(jnp.diagonal(cov)) * 1.3)
        log_joint = model.log_joint_fn(x)
        if chunk:
            log_joint = chunk_log_joint(log_joint, chunk)
        return jnp.sum(estimator(jax.random.key(3), log_joint, q, 10))

    for estimator in (elbo_pathwise, iwae_dreg):
        v0, g0 = jax.value_and_grad(bound, argnums=1)(estimator, mean + 0.2, None)
        v1, g1 = jax.value_and_grad(bound, argnums=1)(estimator, mean + 0.2, 3)
        np.testing.assert_allclose(v1, v0, rtol=1e-6)
        np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-6)


def test_pytree_samples():
    def log_joint(z):
        return jnp.sum(z["a"] ** 2, -1) - jnp.sum(jnp.abs(z["b"]), -1)

    z = {"a": jnp.arange(24.0).reshape(6, 2, 2), "b": -jnp.arange(36.0).reshape(6, 2, 3)}
    np.testing.assert_allclose(chunk_log_joint(log_joint, 4)(z), log_joint(z))


def test_default_chunk_only_for_large_buffers_on_a_cpu():
    # 50 x 128 x 784 = 5.0 M elements: chunks of 5 samples (640 rows, 0.5 M elements).
    assert default_log_joint_chunk(50, 128, 784, backend="cpu") == 5
    assert default_log_joint_chunk(5, 128, 784, backend="cpu") is None  # 0.5 M: as is
    assert default_log_joint_chunk(50, 20, 784, backend="cpu") is None  # 0.8 M: as is
    assert default_log_joint_chunk(50, 128, 784, backend="gpu") is None
    assert default_log_joint_chunk(7, 10_000, 784, backend="cpu") == 1
    assert default_log_joint_chunk(5000, 128, 784, backend="cpu") == 5
    for k in (2, 13, 64, 5000):
        c = default_log_joint_chunk(k, 512, 784, backend="cpu")
        assert c is None or (1 <= c < k and k % c == 0)


def test_refusals():
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_log_joint(lambda z: z, 0)
    with pytest.raises(TypeError, match="log_joint"):
        chunk_log_joint(3, 2)
    with pytest.raises(ValueError, match="batch_size"):
        default_log_joint_chunk(5, 0, 784)


def test_largest_divisor():
    assert largest_divisor(50, 5) == 5 and largest_divisor(50, 7) == 5
    assert largest_divisor(5000, 25) == 25 and largest_divisor(97, 96) == 1
    assert largest_divisor(97, 96, at_least=2) is None
    assert largest_divisor(12, 100) == 12  # at most n itself
    for bad in (0, -3):
        with pytest.raises(ValueError, match="`at_most`"):
            largest_divisor(10, bad)
    with pytest.raises(TypeError, match="`n`"):
        largest_divisor(2.5, 2)
