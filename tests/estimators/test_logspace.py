"""-inf means zero mass and only that; NaN in gives NaN out: kernels, bounds, importance
sampling, enumeration and the gradient estimators (issue 11)."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vi_jax.estimators as vie
from vi_jax.estimators import _logspace

K, B = 4, 3
KEY = jax.random.key(0)
Q = distrax.MultivariateNormalDiag(jnp.zeros((B, 2)), jnp.ones((B, 2)))


def _const(lw):
    """A log_joint returning the given log p(x, z) `[K, B]` whatever z is."""
    return lambda z: lw


# One compiled function per quantity, reused across all hypothesis examples.
_BOUNDS = {
    "iwae_bound": jax.jit(lambda lw: vie.iwae_bound(KEY, _const(lw), Q, K)),
    "renyi_bound": jax.jit(lambda lw: vie.renyi_bound(KEY, _const(lw), Q, K, alpha=0.5)),
    "cubo": jax.jit(lambda lw: vie.cubo(KEY, _const(lw), Q, K)),
    "importance": jax.jit(lambda lw: vie.importance_log_marginal(KEY, _const(lw), Q, K)[:2]),
    "importance_chunked": jax.jit(
        lambda lw: vie.importance_log_marginal(KEY, lambda z: lw[: z.shape[0]], Q, K, chunk_size=K)[
            :2
        ]
    ),
    "log_mean_exp": jax.jit(lambda lw: _logspace.log_mean_exp_nan_aware(lw)),
    "enumerate": jax.jit(
        lambda lw: vie.enumerate_log_marginal(
            lambda z: lw, jnp.arange(K, dtype=lw.dtype)[:, None], batch_shape=(B,)
        )
    ),
}

_entries = st.sampled_from([-np.inf, np.nan, -3.0, 0.0, 1.5, -200.0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entries, min_size=K * B, max_size=K * B), st.sampled_from(sorted(_BOUNDS)))
def test_nan_gives_nan_and_all_minus_inf_gives_minus_inf(entries, name):
    lw = jnp.asarray(np.array(entries, np.float32).reshape(K, B))
    out = _BOUNDS[name](lw)
    values = [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]
    arr = np.asarray(lw)
    has_nan = np.isnan(arr).any(axis=0)
    all_zero = ~has_nan & np.all(arr == -np.inf, axis=0)
    value = values[0]
    assert np.array_equal(np.isnan(value), has_nan), (name, arr, value)
    assert np.array_equal(value == -np.inf, all_zero), (name, arr, value)
    assert np.all(np.isfinite(value[~has_nan & ~all_zero]))
    for other in values[1:]:  # the log standard error: NaN exactly where the input is
        assert np.array_equal(np.isnan(other), has_nan)


def test_kernels_nan_and_zero_mass():
    lw = jnp.array([[0.0, -jnp.inf, jnp.nan], [1.0, -jnp.inf, 0.0]])
    np.testing.assert_allclose(
        _logspace.logsumexp_nan_aware(lw)[0], np.logaddexp(0.0, 1.0), rtol=1e-6
    )
    assert _logspace.logsumexp_nan_aware(lw)[1] == -np.inf
    assert np.isnan(_logspace.logsumexp_nan_aware(lw)[2])
    w = _logspace.normalized_weights(lw)
    assert np.isnan(w[:, 1]).all() and np.isnan(w[:, 2]).all()
    w0 = _logspace.normalized_weights(lw, zero_mass=0.0)
    assert (w0[:, 1] == 0).all() and np.isnan(w0[:, 2]).all()
    ess = _logspace.effective_sample_size(lw)
    assert ess[1] == 0 and np.isnan(ess[2])
    assert np.isnan(_logspace.log_stderr_of_mean(lw)[2])
    assert _logspace.log_stderr_of_mean(lw)[1] == -np.inf


def test_kernels_jit_vmap_grad():
    lw = jnp.array([[0.0, -jnp.inf], [1.0, -jnp.inf]])
    f = jax.jit(jax.vmap(_logspace.log_mean_exp_nan_aware, in_axes=1))
    np.testing.assert_allclose(f(lw)[0], np.log(np.mean(np.exp([0.0, 1.0]))), rtol=1e-6)
    g = jax.grad(
        lambda x: jnp.sum(jnp.where(jnp.isfinite(y := _logspace.logsumexp_nan_aware(x)), y, 0.0))
    )(lw)
    np.testing.assert_allclose(g[:, 0], jax.nn.softmax(lw[:, 0]), rtol=1e-6)
    assert np.all(g[:, 1] == 0)  # all -inf: zero, not NaN, gradient
    g_nan = jax.grad(lambda x: jnp.sum(_logspace.logsumexp_nan_aware(x)))(lw.at[0, 0].set(jnp.nan))
    assert np.isnan(g_nan[:, 0]).all()


def test_nan_log_weight_is_not_minus_inf_in_public_examples():
    # The example: a single NaN made iwae_bound return -inf.
    nan_joint = lambda z: jnp.full(z.shape[:-1], jnp.nan)  # noqa: E731
    assert np.isnan(vie.iwae_bound(KEY, nan_joint, Q, 5)).all()
    assert np.isnan(vie.importance_log_marginal(KEY, nan_joint, Q, 5, chunk_size=2)[0]).all()
    half = lambda z: jnp.where(z[..., 0] > 0, jnp.nan, 0.0)  # noqa: E731
    assert np.isnan(vie.enumerate_binary_log_marginal(half, 3, chunk_size=2))
    assert np.isnan(vie.enumerate_log_marginal(half, jnp.arange(4.0)[:, None], chunk_size=3))
    assert (
        vie.enumerate_binary_log_marginal(lambda z: jnp.full(z.shape[:-1], -jnp.inf), 3) == -jnp.inf
    )


_GRAD_NAMES = sorted(vie.ESTIMATORS)


@pytest.fixture(scope="module")
def grad_fns():
    def make(est):
        def loss(loc, mode):
            q = distrax.MultivariateNormalDiag(loc, jnp.ones((B, 2)))
            # mode 0: a NaN log-weight in sample 0; mode 1: every weight zero.
            lj = lambda z: jnp.where(  # noqa: E731
                mode == 0,
                jnp.where(jnp.arange(z.shape[0])[:, None] == 0, jnp.nan, -jnp.sum(z**2, -1)),
                jnp.where(z[..., 0] > 1e6, 0.0, -jnp.inf),
            )
            return jnp.sum(est(KEY, lj, q, K))

        return jax.jit(jax.value_and_grad(loss))

    return {name: make(vie.ESTIMATORS[name]) for name in _GRAD_NAMES}


@pytest.mark.parametrize("name", _GRAD_NAMES)
def test_gradient_estimators_propagate_nan_and_keep_zero_mass(grad_fns, name):
    loc = jnp.zeros((B, 2))
    value, grad = grad_fns[name](loc, 0)
    assert np.isnan(value), name
    if name not in ("pathwise", "stl"):  # ELBO-pathwise: the NaN constant has no phi path
        assert np.isnan(grad).any(), name
    value, grad = grad_fns[name](loc, 1)
    assert value == -np.inf, name
    assert np.all(np.isfinite(grad)), name  # never NaN for zero mass
    if name.startswith("iwae") or name in ("dreg", "vimco", "score_function", "score_function_loo"):
        assert np.all(grad == 0), name


def test_zero_scale_and_nan_parameter_refused():
    lj = lambda z: -jnp.sum(z**2, -1)  # noqa: E731
    zero = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.array([1.0, 0.0]))
    for fn in (vie.elbo, vie.iwae_bound, vie.elbo_entropy):
        with pytest.raises(ValueError, match="`q` has a zero or negative `scale_diag`"):
            fn(KEY, lj, zero, 2)
    with pytest.raises(ValueError, match="`q \\(the proposal\\)` has a zero or negative `scale`"):
        vie.importance_log_marginal(KEY, lj, distrax.Normal(jnp.zeros(2), 0.0 * jnp.ones(2)), 2)
    nan_q = distrax.MultivariateNormalDiag(jnp.array([jnp.nan, 0.0]), jnp.ones(2))
    with pytest.raises(ValueError, match="`q \\(a parameter\\)` has NaN"):
        vie.iwae_bound(KEY, lj, nan_q, 2)
    # Traced: a NaN parameter gives NaN out (not -inf).
    out = jax.jit(
        lambda loc: vie.iwae_bound(KEY, lj, distrax.MultivariateNormalDiag(loc, jnp.ones(2)), 2)
    )(jnp.array([jnp.nan, 0.0]))
    assert np.isnan(out)


def test_bad_options_name_the_argument():
    lj = lambda z: -jnp.sum(z**2, -1)  # noqa: E731
    q = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    prior = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    with pytest.raises(TypeError, match="`prior`"):
        vie.elbo_kl(KEY, lj, q, "normal", 2)
    with pytest.raises(ValueError, match="`kl`"):
        vie.elbo_kl(KEY, lj, q, prior, 2, kl="bogus")
    with pytest.raises(TypeError, match="`baseline`"):
        vie.elbo_score_function(KEY, lj, q, 2, baseline="b")
    with pytest.raises(ValueError, match="`log_table`"):
        vie.log_marginal_table(jnp.zeros((0, 3)), axis=0)
    with pytest.raises(ValueError, match="`alpha`"):
        vie.renyi_bound(KEY, lj, q, 2, alpha=float("nan"))


def test_mc_expectation_refuses_non_finite_f_like_mc_mean_and_stderr():
    q = distrax.Normal(0.0, 1.0)
    f = lambda z: jnp.where(z > 0, jnp.inf, 0.0)  # noqa: E731
    with pytest.raises(ValueError, match="`f"):
        vie.mc_expectation(KEY, f, q, 8)
    with pytest.raises(ValueError, match="`f"):
        vie.mc_expectation(KEY, f, q, 8, num_repeats=2)
    with pytest.raises(ValueError, match="`values`"):
        vie.mc_mean_and_stderr(f(q.sample(seed=KEY, sample_shape=(8,))))
    est = vie.mc_expectation(KEY, lambda z: z**2, q, 8, num_repeats=2)
    assert est.mean.shape == (2,) and np.all(np.isfinite(est.stderr))


def test_no_estimator_module_imports_a_private_name_from_another_module():
    import ast
    import pathlib

    root = pathlib.Path(vie.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("vi_jax")
            ):
                offenders += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    # a private *module* (`from vi_jax.estimators import _logspace`) is fine
                    if a.name.startswith("_") and not (root / f"{a.name}.py").exists()
                ]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                # `module._name` on an imported module (private modules like _logspace
                # are fine; their names are public within them).
                if node.attr.startswith("_") and not node.attr.startswith("__"):
                    if node.value.id in {
                        "bounds",
                        "weights",
                        "importance",
                        "_common",
                        "_logspace",
                        "_kl",
                        "enumeration",
                        "gradients",
                    }:
                        offenders.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert offenders == []
