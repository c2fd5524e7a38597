import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi_jax as vj
from vi_jax import inference
from vi_jax.inference import ModelView, evaluate_model, model_active_units


@pytest.fixture(scope="module")
def lg():
    model = vj.make_linear_gaussian(jax.random.key(0), data_dim=4, latent_dim=3, noise_scale=0.5)
    x, _ = model.sample(jax.random.key(1), 23)  # 23: not a multiple of the chunk size
    return model, x


def _view(exact: bool):
    def model_fn(params, x):
        model = params
        if exact:
            q = model.posterior(x)
        else:  # a wider, shifted diagonal q: IS still consistent, ELBO strictly lower
            mean, cov = model.posterior_params(x)
            scale = jnp.broadcast_to(1.5 * jnp.sqrt(jnp.diag(cov)), mean.shape)
            q = distrax.MultivariateNormalDiag(mean + 0.1, scale)
        return ModelView(model.log_joint_fn(x), q, model.log_likelihood_fn(x), model.prior())

    return model_fn


def test_exact_posterior_gives_exact_log_likelihood_and_elbo(lg):
    model, x = lg
    ev = evaluate_model(
        jax.random.key(2),
        model,
        _view(True),
        x,
        num_samples=64,
        sample_chunk=16,
        data_chunk=10,
        elbo_samples=2000,
    )
    truth = np.asarray(model.log_marginal(x))
    tol = 1e-3 if ev.log_likelihood.dtype == np.float32 else 1e-8
    np.testing.assert_allclose(ev.log_likelihood, truth, atol=tol * 10, rtol=tol)
    # recon - KL is not constant per sample (only the log-ratio form is): 2000 samples.
    np.testing.assert_allclose(ev.elbo, truth, atol=0.3)
    assert ev.log_likelihood.shape == (23,)


def test_importance_sampled_log_likelihood_approaches_truth(lg):
    model, x = lg
    ev = evaluate_model(
        jax.random.key(3), model, _view(False), x, num_samples=2000, sample_chunk=500, data_chunk=8
    )
    truth = np.asarray(model.log_marginal(x))
    # within 4 of its own Monte Carlo standard errors (plus the O(se^2) downward bias)
    se = ev.log_likelihood_mc_stderr
    assert np.all(se > 0) and np.all(se < 0.1)
    assert np.all(np.abs(ev.log_likelihood - truth) < 4 * se + se**2)
    s = ev.summary()
    assert s["num_examples"] == 23 and s["nll"] == pytest.approx(-s["log_likelihood"])
    assert s["elbo"] < s["log_likelihood"]
    assert s["active_units"] == 3 and ev.num_active_units(threshold=1e6) == 0


def test_model_active_units_counts_dimensions_that_vary(lg):
    model, x = lg

    def model_fn(params, x):
        loc = jnp.concatenate([x[:, :1], jnp.zeros((x.shape[0], 2))], axis=1)  # one active dim
        q = distrax.MultivariateNormalDiag(loc, jnp.ones_like(loc))
        return ModelView(model.log_joint_fn(x), q, model.log_likelihood_fn(x), model.prior())

    count, activity = model_active_units(None, model_fn, x, data_chunk=7)
    assert count == 1 and activity.shape == (3,)
    assert activity[0] == pytest.approx(float(np.var(np.asarray(x[:, 0]))), rel=1e-5)


def test_refusals(lg):
    model, x = lg
    with pytest.raises(ValueError, match="num_samples"):
        evaluate_model(jax.random.key(0), model, _view(True), x, num_samples=0)
    with pytest.raises(ValueError, match="data"):
        evaluate_model(jax.random.key(0), model, _view(True), x[0], num_samples=4)
    with pytest.raises(ValueError, match="data"):
        evaluate_model(
            jax.random.key(0), model, _view(True), x.at[0, 0].set(jnp.nan), num_samples=4
        )
    with pytest.raises(ValueError, match="threshold"):
        model_active_units(model, _view(True), x, threshold=-1.0)
    assert inference.active_units is model_active_units  # the old name still imports


def _bernoulli_view(params, x):
    """A one-latent model with a Bernoulli decoder: logits = w * z."""
    q = distrax.MultivariateNormalDiag(jnp.zeros((x.shape[0], 1)), jnp.ones((x.shape[0], 1)))
    prior = distrax.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))

    def log_lik(z):
        return vj.models.bernoulli_likelihood(params * z).log_prob(x)

    return ModelView(lambda z: log_lik(z) + prior.log_prob(z), q, log_lik, prior)


def test_data_outside_the_likelihoods_support_and_nan_are_refused():
    w = jnp.ones((1, 6))
    key = jax.random.key(0)
    kw = dict(num_samples=4, sample_chunk=4, data_chunk=4)
    binary = (jax.random.uniform(key, (5, 6)) > 0.5).astype(jnp.float32)
    ev = evaluate_model(key, w, _bernoulli_view, binary, **kw)
    assert np.all(ev.log_likelihood < 0)
    grey = evaluate_model(key, w, _bernoulli_view, binary * 0.5, **kw)  # grey levels: allowed
    assert np.all(np.isfinite(grey.log_likelihood))
    with pytest.raises(ValueError, match="outside the support .*Bernoulli .*\\[0, 1\\]"):
        evaluate_model(key, w, _bernoulli_view, jnp.full((5, 6), 7.0), **kw)
    with pytest.raises(ValueError, match="`x` has 30 values outside \\[0, 1\\]"):
        _bernoulli_view(w, jnp.full((5, 6), 7.0)).log_likelihood(jnp.zeros((1, 5, 1)))
    with pytest.raises(ValueError, match="NaN .*`params`"):
        evaluate_model(key, w.at[0, 0].set(jnp.nan), _bernoulli_view, binary, **kw)


def test_evaluating_the_same_model_again_reuses_the_compiled_program(lg):
    model, x = lg
    traces = []

    def model_fn(params, x):
        traces.append(1)  # runs once per trace, not per call
        return _view(True)(params, x)

    kw = dict(num_samples=8, sample_chunk=8, data_chunk=23)
    a = evaluate_model(jax.random.key(4), model, model_fn, x, **kw)
    b = evaluate_model(jax.random.key(4), model, model_fn, x, **kw)
    assert len(traces) == 1
    np.testing.assert_array_equal(a.log_likelihood, b.log_likelihood)


def test_default_sample_chunk_fits_the_backend_and_divides_k():
    from vi_jax.inference.evaluate import default_sample_chunk

    # MNIST at 100 images a call: 2**21 elements on a CPU -> 26, rounded down to 25 | 5000.
    assert default_sample_chunk(5000, 100, 784, backend="cpu") == 25
    assert default_sample_chunk(5000, 100, 784, backend="gpu") == 500
    assert default_sample_chunk(4999, 100, 784, backend="cpu") == 26  # no divisor near: aim
    assert default_sample_chunk(5000, 1, 10, backend="cpu") == 5000  # never more than K
    assert default_sample_chunk(3, 10**6, 784, backend="cpu") == 1
    for k in (1, 7, 64, 5000):
        for chunk in (1, 8, 100):
            c = default_sample_chunk(k, chunk, 784, backend="cpu")
            assert 1 <= c <= k
    with pytest.raises(ValueError, match="data_chunk"):
        default_sample_chunk(10, 0, 784)
    with pytest.raises(ValueError, match="data_dim"):
        default_sample_chunk(10, 1, -1)


def test_default_sample_chunk_is_what_evaluate_model_uses(lg):
    from vi_jax.inference.evaluate import default_sample_chunk

    model, x = lg
    # 23 examples of width 4: on a CPU the aim is 2**21 / 92 samples, so K = 60,000 is
    # drawn in chunks (20,000 on a CPU), with the same draws as the explicit chunk.
    kw = dict(num_samples=60_000, data_chunk=100)
    chunk = default_sample_chunk(60_000, len(x), x.shape[1])
    assert chunk < 60_000
    a = evaluate_model(jax.random.key(6), model, _view(False), x, **kw)
    b = evaluate_model(jax.random.key(6), model, _view(False), x, sample_chunk=chunk, **kw)
    np.testing.assert_array_equal(a.log_likelihood, b.log_likelihood)
    with pytest.raises(ValueError, match="sample_chunk"):
        evaluate_model(jax.random.key(6), model, _view(False), x, sample_chunk=0, **kw)
