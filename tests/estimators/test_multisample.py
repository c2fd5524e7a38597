"""MIWAE / PIWAE / CIWAE: exact identities on shared samples, unbiasedness, SNR orderings."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased, flat

import vi_jax.estimators as vie
from benchmarks.bounds import snr_draws
from vi_jax.estimators import multisample as ms

RTOL = 2e-4 if jnp.zeros(()).dtype == jnp.float32 else 1e-9


@pytest.fixture(scope="module")
def lg():
    model = vie.make_linear_gaussian(jax.random.key(2), data_dim=4, latent_dim=2, noise_scale=0.8)
    x, _ = model.sample(jax.random.key(3), 3)
    mean, cov = model.posterior_params(x)
    phi = {"loc": mean + 0.4, "log_scale": jnp.log(jnp.sqrt(jnp.diag(cov)))[None].repeat(3, 0)}
    theta = {"weight": model.weight, "bias": model.bias}
    return model, x, phi, theta


def _q(phi):
    return distrax.MultivariateNormalDiag(phi["loc"], jnp.exp(phi["log_scale"]))


def _lj(model, theta, x):
    return model._replace(weight=theta["weight"], bias=theta["bias"]).log_joint_fn(x)


def _grads(fn, model, x, phi, theta, key):
    f = lambda p, t, kk: fn(kk, _lj(model, t, x), _q(p)).sum()  # noqa: E731
    return jax.jit(jax.grad(f, (0, 1)))(phi, theta, key)


def _close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=RTOL, atol=RTOL)


def test_values_reduce_to_elbo_and_iwae(lg):
    model, x, phi, theta = lg
    key, lj, q = jax.random.key(5), _lj(model, theta, x), _q(phi)
    _close(ms.miwae_bound(key, lj, q, 6, num_groups=1), vie.iwae_bound(key, lj, q, 6))
    _close(ms.miwae_bound(key, lj, q, 1, num_groups=6), vie.elbo(key, lj, q, 6))
    _close(ms.ciwae_bound(key, lj, q, 6, beta=1.0), vie.elbo(key, lj, q, 6))
    _close(ms.ciwae_bound(key, lj, q, 6, beta=0.0), vie.iwae_bound(key, lj, q, 6))
    for fn in (ms.miwae_pathwise, ms.miwae_dreg):
        _close(fn(key, lj, q, 3, num_groups=2), ms.miwae_bound(key, lj, q, 3, num_groups=2))
    for fn in (ms.piwae_pathwise, ms.piwae_dreg):
        _close(fn(key, lj, q, 3, num_groups=2), vie.iwae_bound(key, lj, q, 6))
    # MIWAE(M, K) lies between the ELBO and IWAE(M*K) in expectation; here per draw,
    # IWAE(M*K) >= MIWAE(M, K) >= ELBO(M*K) holds exactly (Jensen on shared samples).
    lo, mid = vie.elbo(key, lj, q, 6), ms.miwae_bound(key, lj, q, 3, num_groups=2)
    hi = vie.iwae_bound(key, lj, q, 6)
    assert np.all(lo <= mid + 1e-5) and np.all(mid <= hi + 1e-5)


def test_gradients_on_shared_samples(lg):
    """PIWAE's theta-gradient is IWAE(M*K)'s, its phi-gradient MIWAE(M, K)'s; M = 1 is IWAE."""
    model, x, phi, theta = lg
    key, m, k = jax.random.key(7), 3, 4
    iwae_mk = _grads(lambda kk, lj, q: vie.iwae_bound(kk, lj, q, m * k), model, x, phi, theta, key)
    miwae = _grads(
        lambda kk, lj, q: ms.miwae_bound(kk, lj, q, k, num_groups=m), model, x, phi, theta, key
    )
    miwae_pw = _grads(
        lambda kk, lj, q: ms.miwae_pathwise(kk, lj, q, k, num_groups=m), model, x, phi, theta, key
    )
    piwae = _grads(
        lambda kk, lj, q: ms.piwae_pathwise(kk, lj, q, k, num_groups=m), model, x, phi, theta, key
    )
    _close(miwae_pw, miwae)
    _close(piwae[1], iwae_mk[1])  # theta
    _close(piwae[0], miwae[0])  # phi
    miwae_dr = _grads(
        lambda kk, lj, q: ms.miwae_dreg(kk, lj, q, k, num_groups=m), model, x, phi, theta, key
    )
    piwae_dr = _grads(
        lambda kk, lj, q: ms.piwae_dreg(kk, lj, q, k, num_groups=m), model, x, phi, theta, key
    )
    _close(miwae_dr[1], miwae[1])  # DReG changes phi only
    _close(piwae_dr[1], iwae_mk[1])
    _close(piwae_dr[0], miwae_dr[0])
    # One group: MIWAE-DReG is IWAE-DReG, sample for sample.
    one = _grads(
        lambda kk, lj, q: ms.miwae_dreg(kk, lj, q, m * k, num_groups=1), model, x, phi, theta, key
    )
    _close(
        one, _grads(lambda kk, lj, q: vie.iwae_dreg(kk, lj, q, m * k), model, x, phi, theta, key)
    )
    ciwae = _grads(
        lambda kk, lj, q: ms.ciwae_pathwise(kk, lj, q, 5, beta=0.3), model, x, phi, theta, key
    )
    _close(
        ciwae,
        _grads(lambda kk, lj, q: ms.ciwae_bound(kk, lj, q, 5, beta=0.3), model, x, phi, theta, key),
    )


def test_dreg_phi_gradient_unbiased_for_miwae(lg):
    """MIWAE-DReG and MIWAE-pathwise phi-gradients have the same mean (over 2000 keys)."""
    model, x, phi, theta = lg

    def diff(key):
        a = _grads(
            lambda kk, lj, q: ms.miwae_dreg(kk, lj, q, 4, num_groups=2), model, x, phi, theta, key
        )[0]
        b = _grads(
            lambda kk, lj, q: ms.miwae_pathwise(kk, lj, q, 4, num_groups=2),
            model,
            x,
            phi,
            theta,
            key,
        )[0]
        return jax.tree.map(jnp.subtract, a, b)

    d = jax.jit(jax.vmap(diff))(jax.random.split(jax.random.key(0), 2000))
    assert_unbiased(flat(d), 0.0, what="MIWAE DReG - pathwise")


def _rainforth_snr(fn, k, n=1000, seed=0):
    """Mean over dimensions of the SNR of d/dmu (theta) and d/db (phi).

    The gradients come from the `bounds` benchmark's Rainforth et al. Gaussian model
    (D = 20, at a 0.1-perturbation of the optimum); the SNR here is the plain
    |mean| / sd, enough for the orderings below.
    """
    gm, gb = snr_draws(fn, k, n, seed)
    snr = lambda g: float(np.mean(np.abs(np.mean(g, 0)) / np.std(g, 0, ddof=1)))  # noqa: E731
    return snr(gm), snr(gb)


def test_rainforth_snr_orderings():
    """IWAE: theta-SNR rises and phi-SNR falls with K; DReG's phi-SNR does not fall.

    In theory by sqrt(64) = 8 each way for large K; measured here ~5.5x and ~4.4x.
    """
    th1, ph1 = _rainforth_snr(vie.iwae_pathwise, 1)
    th64, ph64 = _rainforth_snr(vie.iwae_pathwise, 64)
    assert th64 > 3 * th1, (th1, th64)
    assert ph64 < ph1 / 2, (ph1, ph64)
    _, dreg1 = _rainforth_snr(vie.iwae_dreg, 1)
    _, dreg64 = _rainforth_snr(vie.iwae_dreg, 64)
    assert dreg64 > dreg1, (dreg1, dreg64)
    # MIWAE(8, 8) trades off: its phi-SNR well above IWAE-64's.
    _, mi = _rainforth_snr(lambda kk, lj, q, k: ms.miwae_pathwise(kk, lj, q, 8, num_groups=8), 8)
    assert mi > 2 * ph64, (mi, ph64)


def test_refusals(lg):
    model, x, phi, theta = lg
    key, lj, q = jax.random.key(0), _lj(model, theta, x), _q(phi)
    with pytest.raises(ValueError, match="num_groups"):
        ms.miwae_bound(key, lj, q, 2, num_groups=0)
    with pytest.raises(ValueError, match="num_groups"):
        ms.piwae_pathwise(key, lj, q, 2, num_groups=1.5)
    with pytest.raises(ValueError, match="beta"):
        ms.ciwae_bound(key, lj, q, 2, beta=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        ms.miwae_pathwise(key, lj, q, 0, num_groups=2)
    bern = distrax.Independent(distrax.Bernoulli(logits=jnp.zeros((3, 2))), 1)
    with pytest.raises(TypeError, match="reparameteris"):
        ms.piwae_dreg(key, lj, bern, 2, num_groups=2)


def test_registered_and_transformable(lg):
    model, x, phi, theta = lg
    from vi_jax.estimators import registry

    for obj in ("miwae", "piwae", "ciwae"):
        assert obj in registry.objectives()
    spec = registry.get_estimator("piwae", "dreg")
    est = spec.bind(num_groups=2, alpha=0.3)
    lj = _lj(model, theta, x)
    f = jax.jit(lambda p, key: est(key, lj, _q(p), 3))
    assert f(phi, jax.random.key(0)).shape == (3,)
    g = jax.grad(lambda p: f(p, jax.random.key(0)).sum())(phi)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(g))
    v = jax.vmap(lambda key: est(key, lj, _q(phi), 3))(jax.random.split(jax.random.key(1), 4))
    assert v.shape == (4, 3)
