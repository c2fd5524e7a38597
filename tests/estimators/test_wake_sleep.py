"""Reweighted wake-sleep against the exact forward-KL gradient (Gaussian and enumerable)."""

import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased, flat, mean_and_stderr

import vi_jax.estimators as vie
from vi_jax.estimators import wake_sleep as ws


@pytest.fixture(scope="module")
def lg():
    model = vie.make_linear_gaussian(jax.random.key(2), data_dim=4, latent_dim=2, noise_scale=0.8)
    x, _ = model.sample(jax.random.key(3), 2)
    mean, cov = model.posterior_params(x)
    phi = {"loc": mean + 0.3, "log_scale": jnp.log(jnp.sqrt(jnp.diag(cov)))[None].repeat(2, 0)}
    theta = {"weight": model.weight, "bias": model.bias}
    return model, x, phi, theta


def _q(phi):
    return distrax.MultivariateNormalDiag(phi["loc"], jnp.exp(phi["log_scale"]))


def _lj(model, theta, x):
    return model._replace(weight=theta["weight"], bias=theta["bias"]).log_joint_fn(x)


def _exact_forward_kl_grad(model, x, phi):
    """-grad_phi KL(p(z|x) || q), in closed form (both Gaussian)."""
    post = model.posterior(x)
    return jax.grad(lambda p: -post.kl_divergence(_q(p)).sum())(phi)


def _phi_grads(fn, model, x, phi, theta, k, n, seed=0):
    def one(key):
        return jax.grad(lambda p: fn(key, _lj(model, theta, x), _q(p), k).sum())(phi)

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), n))


def test_wake_phi_bias_shrinks_with_k(lg):
    """Wake-phi is biased at K = 2, and consistent: within 4 s.e. of the truth at K = 2000."""
    model, x, phi, theta = lg
    truth = flat(jax.tree.map(lambda a: a[None], _exact_forward_kl_grad(model, x, phi)))[0]
    small = flat(_phi_grads(ws.rws_wake_phi, model, x, phi, theta, 2, 2000))
    mean, se = mean_and_stderr(small)
    assert np.max(np.abs(mean - truth) / se) > 4, "K = 2 should be visibly biased"
    big = flat(_phi_grads(ws.rws_wake_phi, model, x, phi, theta, 2000, 300, seed=1))
    assert_unbiased(big, truth, what="wake-phi at K = 2000")
    err_small = np.linalg.norm(mean - truth)
    err_big = np.linalg.norm(big.mean(0) - truth)
    assert err_big < err_small / 5


def test_wake_theta_is_iwae_theta_gradient(lg):
    model, x, phi, theta = lg
    key = jax.random.key(4)

    def g(fn):
        return jax.grad(lambda p, t: fn(key, _lj(model, t, x), _q(p), 5).sum(), (0, 1))(phi, theta)

    iw, wake, wt, wp = (
        g(vie.iwae_pathwise),
        g(ws.rws_wake),
        g(ws.rws_wake_theta),
        g(ws.rws_wake_phi),
    )
    for a, b in zip(jax.tree.leaves(iw[1]), jax.tree.leaves(wake[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    for a, b in zip(jax.tree.leaves(wp[0]), jax.tree.leaves(wake[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert all(np.all(v == 0) for v in jax.tree.leaves(wt[0]))
    assert all(np.all(v == 0) for v in jax.tree.leaves(wp[1]))
    value = ws.rws_wake(key, _lj(model, theta, x), _q(phi), 5)
    np.testing.assert_allclose(value, vie.iwae_bound(key, _lj(model, theta, x), _q(phi), 5), 1e-5)


def test_wake_phi_discrete_against_enumeration():
    """Bernoulli q on an enumerable model: wake-phi -> -grad KL(p(z|x) || q) exactly enumerated."""
    model = vie.make_binary_latent_gaussian(jax.random.key(0), data_dim=5, latent_dim=4)
    x, _ = model.sample(jax.random.key(1), 1)
    lj = model.log_joint_fn(x)
    logits = jnp.array([[0.3, -0.5, 1.0, 0.0]])
    q = lambda lg_: distrax.Independent(distrax.Bernoulli(logits=lg_, dtype=jnp.float32), 1)  # noqa: E731
    support = jnp.array(list(itertools.product([0.0, 1.0], repeat=4)))[:, None, :]  # [16, 1, 4]
    log_post = lj(support) - jax.nn.logsumexp(lj(support), axis=0)
    truth = jax.grad(lambda lg_: jnp.sum(jnp.exp(log_post) * q(lg_).log_prob(support)))(logits)

    def one(key):
        return jax.grad(lambda lg_: ws.rws_wake_phi(key, lj, q(lg_), 1000).sum())(logits)

    g = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(2), 400))
    assert_unbiased(np.asarray(g).reshape(400, -1), np.asarray(truth).ravel(), what="wake-phi")


def test_sleep_phi_zero_at_exact_amortised_posterior(lg):
    """E_{p(z, x)}[grad log q(z | x)] = 0 when q(z | x) is the exact posterior, not otherwise."""
    model, _, _, _ = lg

    def grad_at(shift, key):
        x, z = model.sample(key, 256)
        mean, cov = model.posterior_params(x)
        chol = jnp.linalg.cholesky(cov)

        def f(s):
            q = distrax.MultivariateNormalTri(mean + s, jnp.broadcast_to(chol, (256, 2, 2)))
            return ws.sleep_phi(q, z).mean()

        return jax.grad(f)(shift)

    keys = jax.random.split(jax.random.key(9), 200)
    at_opt = jax.jit(jax.vmap(lambda k: grad_at(jnp.zeros(2), k)))(keys)
    assert_unbiased(np.asarray(at_opt), np.zeros(2), what="sleep-phi at the optimum")
    off = jax.jit(jax.vmap(lambda k: grad_at(jnp.full(2, 0.3), k)))(keys)
    mean, se = mean_and_stderr(np.asarray(off))
    assert np.all(np.abs(mean) > 10 * se)


def test_refusals_and_registry(lg):
    model, x, phi, theta = lg
    lj = _lj(model, theta, x)
    with pytest.raises(ValueError, match="num_samples"):
        ws.rws_wake(jax.random.key(0), lj, _q(phi), 1)
    with pytest.raises(ValueError, match="num_samples"):
        ws.rws_wake_phi(jax.random.key(0), lj, _q(phi), 1)
    ws.rws_wake_theta(jax.random.key(0), lj, _q(phi), 1)
    with pytest.raises(TypeError, match="`q`"):
        ws.sleep_phi("q", jnp.zeros(2))
    from vi_jax.estimators import registry

    spec = registry.get_estimator("rws", "wake")
    assert spec.discrete_ok and not spec.needs_reparam and spec.min_samples == 2
    v = jax.jit(jax.vmap(lambda k: ws.rws_wake(k, lj, _q(phi), 3)))(
        jax.random.split(jax.random.key(0), 3)
    )
    assert v.shape == (3, 2)


def test_nan_propagates(lg):
    model, x, phi, _ = lg
    bad = lambda z: jnp.full(z.shape[:-1], jnp.nan)  # noqa: E731
    for fn in (ws.rws_wake, ws.rws_wake_phi):
        assert np.all(np.isnan(fn(jax.random.key(0), bad, _q(phi), 3)))
    g = jax.grad(lambda p: ws.rws_wake_phi(jax.random.key(0), bad, _q(p), 3).sum())(phi)
    assert all(np.all(np.isnan(v)) for v in jax.tree.leaves(g))
