"""TVO against thermodynamic integration done by quadrature on a 1-D latent model."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased, flat, mean_and_stderr

import vi_jax.estimators as vie
from vi_jax.estimators import thermodynamic as T

BETAS = (0.0, 0.1, 0.4)


@pytest.fixture(scope="module")
def lg1():
    """Linear-Gaussian with one latent, 1 data point, q off the posterior."""
    model = vie.make_linear_gaussian(jax.random.key(5), data_dim=3, latent_dim=1, noise_scale=0.7)
    x, _ = model.sample(jax.random.key(6), 1)
    mean, cov = model.posterior_params(x)
    phi = {"loc": mean + 0.5, "log_scale": jnp.log(jnp.sqrt(jnp.diag(cov)))[None] + 0.3}
    theta = {"weight": model.weight, "bias": model.bias}
    return model, x, phi, theta


def _q(phi):
    return distrax.MultivariateNormalDiag(phi["loc"], jnp.exp(phi["log_scale"]))


def _lj(model, theta, x):
    return model._replace(weight=theta["weight"], bias=theta["bias"]).log_joint_fn(x)


def _exact_tvo(model, x, phi, theta, betas=BETAS, upper=False):
    """sum_j dbeta_j d/dbeta log Z_beta, log Z_beta = log int q^(1-beta) p^beta dz (quadrature)."""
    grid = jnp.linspace(-12.0, 12.0, 6001)[:, None, None]  # [G, 1, 1]
    dz = grid[1, 0, 0] - grid[0, 0, 0]

    def log_z(beta, p, t):
        log_q = _q(p).log_prob(grid)
        log_p = _lj(model, t, x)(grid)
        return jax.nn.logsumexp((1 - beta) * log_q + beta * log_p, axis=0) + jnp.log(dz)

    points = (*betas[1:], 1.0) if upper else betas
    widths = np.diff(np.asarray((*betas, 1.0)))

    def total(p, t):
        return sum(
            w * jax.grad(lambda b: log_z(b, p, t).sum())(b)
            for b, w in zip(points, widths, strict=False)
        )

    return total


def test_quadrature_sanity(lg1):
    model, x, phi, theta = lg1
    # one partition at 0 is the ELBO; the integral to 1 of d log Z is log p(x).
    elbo = model.elbo(x, phi["loc"], jax.vmap(jnp.diag)(jnp.exp(phi["log_scale"])))
    np.testing.assert_allclose(
        _exact_tvo(model, x, phi, theta, (0.0,))(phi, theta), elbo.sum(), 1e-4
    )


def test_value_and_gradient_consistent(lg1):
    """Mean TVO value and (theta, phi) gradient over keys at K = 1000 match quadrature."""
    model, x, phi, theta = lg1
    exact = _exact_tvo(model, x, phi, theta)
    truth_v = exact(phi, theta)
    truth_g = jax.grad(exact, (0, 1))(phi, theta)

    def one(key):
        f = lambda p, t: T.tvo(key, _lj(model, t, x), _q(p), 1000, betas=BETAS).sum()  # noqa: E731
        return f(phi, theta), jax.grad(f, (0, 1))(phi, theta)

    v, g = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 300))
    assert_unbiased(np.asarray(v), truth_v, what="TVO value")
    assert_unbiased(flat(g), flat(jax.tree.map(lambda a: a[None], truth_g))[0], what="TVO grad")


def test_bounds_sandwich_and_tighten(lg1):
    model, x, phi, theta = lg1
    lj, q = _lj(model, theta, x), _q(phi)
    log_px = float(model.log_marginal(x).sum())
    keys = jax.random.split(jax.random.key(1), 200)

    def mean_of(betas, upper=False, k=2000):
        f = jax.jit(jax.vmap(lambda kk: T.tvo_bound(kk, lj, q, k, betas=betas, upper=upper)))
        return mean_and_stderr(np.asarray(f(keys)).ravel())

    elbo, _ = mean_of((0.0,))
    coarse, se1 = mean_of(T.tvo_schedule(2))
    fine, se2 = mean_of(T.tvo_schedule(10))
    upper, se3 = mean_of(T.tvo_schedule(10), upper=True)
    assert elbo < coarse < fine < log_px < upper, (elbo, coarse, fine, log_px, upper)
    np.testing.assert_allclose(
        coarse,
        float(_exact_tvo(model, x, phi, theta, T.tvo_schedule(2))(phi, theta)),
        atol=4 * se1 + 1e-3,
    )


def test_schedule_and_refusals(lg1):
    model, x, phi, theta = lg1
    lj, q = _lj(model, theta, x), _q(phi)
    s = T.tvo_schedule(5, beta_min=0.01)
    assert s[0] == 0.0 and len(s) == 5 and all(b1 > b0 for b0, b1 in zip(s, s[1:], strict=False))
    assert abs(s[1] - 0.01) < 1e-12 and s[-1] < 1
    assert T.tvo_schedule(4, spacing="linear") == (0.0, 0.25, 0.5, 0.75)
    key = jax.random.key(0)
    for bad, match in [
        ((0.1, 0.5), "start at 0"),
        ((0.0, 0.5, 0.5), "increasing"),
        ((0.0, 1.0), r"\[0, 1\)"),
        ((0.0, -0.1), r"\[0, 1\)"),
        ((), "at least"),
    ]:
        with pytest.raises(ValueError, match=match):
            T.tvo(key, lj, q, 3, betas=bad)
    with pytest.raises(ValueError, match="num_partitions"):
        T.tvo_schedule(0)
    with pytest.raises(ValueError, match="beta_min"):
        T.tvo_schedule(3, beta_min=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        T.tvo(key, lj, q, 1)


def test_discrete_q_and_transforms():
    model = vie.make_binary_latent_gaussian(jax.random.key(0), data_dim=5, latent_dim=3)
    x, _ = model.sample(jax.random.key(1), 4)
    lj = model.log_joint_fn(x)

    def f(logits, key):
        q = distrax.Independent(distrax.Bernoulli(logits=logits, dtype=jnp.float32), 1)
        return T.tvo(key, lj, q, 8, betas=(0.0, 0.5)).sum()

    g = jax.jit(jax.grad(f))(jnp.zeros((4, 3)), jax.random.key(2))
    assert g.shape == (4, 3) and np.all(np.isfinite(g))
    v = jax.vmap(lambda k: f(jnp.zeros((4, 3)), k))(jax.random.split(jax.random.key(3), 5))
    assert v.shape == (5,)
