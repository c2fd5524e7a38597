import functools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased

from vi_jax.estimators.monte_carlo import MCEstimate, mc_expectation, mc_mean_and_stderr

RTOL = 1e-5 if jnp.zeros(()).dtype == jnp.float32 else 1e-12


def _square_of(x):
    return x**2


def test_pi_by_darts():
    square = distrax.Independent(distrax.Uniform(jnp.zeros(2), jnp.ones(2)), 1)
    est = mc_expectation(
        jax.random.key(0), lambda u: 4.0 * (jnp.sum(u**2, -1) <= 1.0), square, 100_000
    )
    assert isinstance(est, MCEstimate) and est.mean.shape == ()
    # the standard error of 4 * Bernoulli(pi/4) with n darts
    np.testing.assert_allclose(
        est.stderr, 4 * math.sqrt(math.pi / 4 * (1 - math.pi / 4) / 1e5), rtol=0.02
    )
    assert abs(float(est.mean) - math.pi) < 4 * float(est.stderr)


def test_unbiased_for_known_expectation_with_value_shape():
    # z ~ N(mu, s^2) in 2-D: E[z^2] = mu^2 + s^2, E[z] = mu, values [n, 2, 2]
    mu, s = jnp.array([1.0, -0.5]), jnp.array([2.0, 0.5])
    p = distrax.MultivariateNormalDiag(mu, s)
    f = lambda z: jnp.stack([z, z**2], axis=1)  # noqa: E731
    truth = np.stack([mu, mu**2 + s**2])
    est = mc_expectation(jax.random.key(1), f, p, 20_000)
    assert est.mean.shape == (2, 2) and est.stderr.shape == (2, 2)
    assert np.all(np.abs(est.mean - truth) < 4 * est.stderr)
    # over independent repetitions, the repetition means are unbiased too
    reps = mc_expectation(jax.random.key(2), f, p, 50, num_repeats=400)
    assert reps.mean.shape == (400, 2, 2)
    assert_unbiased(reps.mean, truth, what="MC repetitions")


def test_stderr_shrinks_as_one_over_sqrt_n():
    p = distrax.Normal(1.0, 2.0)
    reps = 400
    small = mc_expectation(jax.random.key(3), _square_of, p, 100, num_repeats=reps).stderr
    large = mc_expectation(jax.random.key(4), _square_of, p, 400, num_repeats=reps).stderr
    a, b = np.mean(small), np.mean(large)
    sa, sb = np.std(small, ddof=1) / math.sqrt(reps), np.std(large, ddof=1) / math.sqrt(reps)
    ratio = a / b
    se_ratio = ratio * math.hypot(sa / a, sb / b)  # delta method
    assert abs(ratio - 2.0) < 4 * se_ratio, (ratio, se_ratio)
    # and the reported stderr is the actual spread of the estimate: the sample std of R
    # nearly Gaussian means has relative standard error about 1/sqrt(2 R)
    means = mc_expectation(jax.random.key(5), _square_of, p, 100, num_repeats=reps).mean
    np.testing.assert_allclose(np.std(means, ddof=1), a, rtol=4 / math.sqrt(2 * reps))


def test_function_sampler_and_matches_manual_computation():
    def sampler(key, n):
        return jax.random.exponential(key, (n, 3))

    est = mc_expectation(jax.random.key(6), lambda z: z, sampler, 1000)
    z = np.asarray(sampler(jax.random.key(6), 1000), np.float64)
    np.testing.assert_allclose(est.mean, z.mean(0), rtol=RTOL * 10)
    np.testing.assert_allclose(est.stderr, z.std(0, ddof=1) / math.sqrt(1000), rtol=1e-4)
    assert np.all(np.abs(est.mean - 1.0) < 4 * est.stderr)


def test_mc_mean_and_stderr():
    v = jax.random.normal(jax.random.key(7), (5, 30)) + 3.0
    est = mc_mean_and_stderr(v, axis=1)
    vn = np.asarray(v, np.float64)
    np.testing.assert_allclose(est.mean, vn.mean(1), rtol=RTOL * 10)
    np.testing.assert_allclose(est.stderr, vn.std(1, ddof=1) / math.sqrt(30), rtol=1e-4)
    np.testing.assert_allclose(mc_mean_and_stderr(v.T).mean, est.mean, rtol=RTOL)
    one = mc_mean_and_stderr(jnp.array([2.0]))
    assert one.mean == 2.0 and one.stderr == np.inf  # a single sample: spread unknown
    ints = mc_mean_and_stderr(jnp.array([0, 1, 1, 0]))  # indicators are averaged as floats
    np.testing.assert_allclose(ints.mean, 0.5)
    jitted = jax.jit(mc_mean_and_stderr, static_argnames="axis")(v, axis=1)
    np.testing.assert_allclose(jitted.stderr, est.stderr, rtol=1e-5)
    vm = jax.vmap(mc_mean_and_stderr)(v)
    np.testing.assert_allclose(vm.mean, est.mean, rtol=1e-5)
    g = jax.grad(lambda x: mc_mean_and_stderr(x).stderr)(v[0])
    assert np.all(np.isfinite(g))


def test_jit_vmap_over_keys_and_data_and_grad():
    p = distrax.Normal(0.5, 1.0)
    f = jax.jit(mc_expectation, static_argnums=(1, 3), static_argnames="num_repeats")
    est = f(jax.random.key(8), _square_of, p, 64)
    ref = mc_expectation(jax.random.key(8), _square_of, p, 64)
    np.testing.assert_allclose(est.mean, ref.mean, rtol=1e-5)
    # vmap over keys equals num_repeats
    keys = jax.random.split(jax.random.key(9), 5)
    vk = jax.vmap(lambda k: mc_expectation(k, _square_of, p, 64))(keys)
    rep = mc_expectation(jax.random.key(9), _square_of, p, 64, num_repeats=5)
    np.testing.assert_allclose(vk.mean, rep.mean, rtol=1e-5)
    # vmap over data: the distribution's parameters
    mus = jnp.array([0.0, 1.0, 2.0])
    vd = jax.vmap(
        lambda m: mc_expectation(jax.random.key(10), _square_of, distrax.Normal(m, 1.0), 2000)
    )(mus)
    assert np.all(np.abs(vd.mean - (mus**2 + 1)) < 4 * vd.stderr)

    # grad: pathwise d/dmu E_{N(mu,1)}[z^2] = 2 mu, unbiased over keys
    def grad_mean(key, mu):
        return jax.grad(lambda m: mc_expectation(key, _square_of, distrax.Normal(m, 1.0), 16).mean)(
            mu
        )

    grads = jax.jit(jax.vmap(functools.partial(grad_mean, mu=0.7)))(
        jax.random.split(jax.random.key(11), 2000)
    )
    assert_unbiased(grads, 1.4, what="pathwise gradient")
    gs = jax.grad(
        lambda m: mc_expectation(jax.random.key(12), _square_of, distrax.Normal(m, 1.0), 16).stderr
    )(0.7)
    assert np.isfinite(gs)


def test_refusals_name_the_argument():
    p = distrax.Normal(0.0, 1.0)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_samples"):
        mc_expectation(key, _square_of, p, 0)
    with pytest.raises(TypeError, match="num_samples"):
        mc_expectation(key, _square_of, p, 10.0)
    with pytest.raises(ValueError, match="num_repeats"):
        mc_expectation(key, _square_of, p, 10, num_repeats=0)
    with pytest.raises(TypeError, match="`f`"):
        mc_expectation(key, 3.0, p, 10)
    with pytest.raises(TypeError, match="sampler"):
        mc_expectation(key, _square_of, "normal", 10)
    with pytest.raises(ValueError, match="sampler"):
        mc_expectation(key, _square_of, distrax.Normal(jnp.nan, 1.0), 10)
    with pytest.raises(ValueError, match="sampler"):
        mc_expectation(key, _square_of, lambda k, n: jnp.zeros((n + 1, 2)), 10)
    with pytest.raises(ValueError, match="`f`"):
        mc_expectation(key, lambda z: jnp.sum(z), p, 10)
    with pytest.raises(ValueError, match="values"):
        mc_mean_and_stderr(jnp.array([1.0, jnp.nan]))
    with pytest.raises(ValueError, match="values"):
        mc_mean_and_stderr(jnp.array(1.0))
    with pytest.raises(ValueError, match="axis"):
        mc_mean_and_stderr(jnp.ones((2, 3)), axis=2)
