"""AIS and BDMC against the exact log p(x) of the linear-Gaussian model."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased, mean_and_stderr

from vi_jax.inference import ais as A
from vi_jax.types import ModelView

T_MAX = 32
STEPS = (1, 8, 32)
RUNS, CHAINS = 200, 4


def _padded(num_steps: int) -> np.ndarray:
    """A `num_steps` sigmoid schedule padded with 1s to T_MAX (same estimate, one program)."""
    b = A.annealing_schedule(num_steps)
    return np.concatenate([b, np.ones(T_MAX - num_steps)])


@pytest.fixture(scope="module")
def problem(fixed_model):
    x, z = fixed_model.sample(jax.random.key(11), 2)
    return fixed_model, x, z, np.asarray(fixed_model.log_marginal(x), np.float64)


@pytest.fixture(scope="module")
def runs(problem):
    """BDMC from the prior, RUNS independent runs per example and per T: {T: BDMCResult [R, 2]}."""
    model, x, z, _ = problem
    prior = model.prior()

    def one(key, xi, zi, betas):
        return A.bdmc(
            key, model.log_joint_fn(xi), prior, zi, T_MAX, CHAINS, num_leapfrog=4, schedule=betas
        )

    run = jax.jit(jax.vmap(jax.vmap(one, (0, 0, 0, None)), (0, None, None, None)))
    keys = jax.random.split(jax.random.key(0), RUNS * 2).reshape(RUNS, 2)
    return {t: jax.tree_util.tree_map(np.asarray, run(keys, x, z, _padded(t))) for t in STEPS}


@pytest.mark.parametrize("num_steps", STEPS)
def test_ais_is_unbiased_for_p_and_reverse_for_one_over_p(problem, runs, num_steps):
    *_, exact = problem
    res = runs[num_steps]
    assert_unbiased(np.exp(res.lower.log_marginal - exact), np.ones(2), what="E[p_hat]/p")
    if num_steps == T_MAX:
        # Reverse weights are heavy-tailed at small T (T = 1 is the harmonic-mean
        # estimator, of infinite variance here): their p-space mean is tested where
        # the standard error means something.
        assert_unbiased(np.exp(exact - res.upper.log_marginal), np.ones(2), what="E[1/p_hat]*p")


def test_bounds_bracket_and_meet_as_t_grows(problem, runs):
    *_, exact = problem
    biases, gaps = [], []
    for t in STEPS:
        lo, se_lo = mean_and_stderr(runs[t].lower.log_marginal)
        up, se_up = mean_and_stderr(runs[t].upper.log_marginal)
        print(f"T={t:3d} exact={exact} lower={lo} (+-{se_lo}) upper={up} (+-{se_up})")
        assert np.all(lo <= exact + 4 * se_lo) and np.all(up >= exact - 4 * se_up)
        biases.append(exact - lo)
        gaps.append(mean_and_stderr(runs[t].gap))
    (g_1, s_1), (g_8, _), (g_32, s_32) = gaps
    assert np.all(g_32 + 4 * np.hypot(s_1, s_32) < g_1), gaps
    assert np.all(g_32 < g_8) and np.all(g_8 < g_1), gaps
    assert np.all(biases[2] < biases[1]) and np.all(biases[1] < biases[0]), biases
    # The bounds meet: at T = 32 the gap is a fifth of the importance-sampling one.
    assert np.all(g_32 < 0.2 * g_1), gaps


def test_results_report_acceptance_and_step_sizes(runs):
    res = runs[T_MAX].lower
    assert res.log_weights.shape == (RUNS, 2, CHAINS)
    assert res.step_sizes.shape == (RUNS, 2, T_MAX - 1)
    assert np.all((res.acceptance_rate > 0.3) & (res.acceptance_rate < 0.95))
    assert np.all(np.isfinite(res.stderr)) and np.all(res.log_weight_variance >= 0)


def _view_fn(model):
    def view(params, x):
        m = model._replace(bias=params)
        return ModelView(m.log_joint_fn(x), m.posterior(x), m.log_likelihood_fn(x), m.prior())

    return view


def test_evaluate_ais_exact_from_posterior_and_warns_on_collapse(problem):
    """Started at the exact posterior every weight is p(x): any T, any transitions.

    A huge fixed step size makes every HMC proposal fail: the driver names the examples.
    """
    model, x, *_ = problem
    data = jnp.concatenate([x, x[:1]])
    with pytest.warns(RuntimeWarning, match=r"indices \[0, 1, 2\]"):
        res = A.evaluate_ais(
            jax.random.key(1),
            model.bias,
            _view_fn(model),
            data,
            num_steps=3,
            num_chains=4,
            data_chunk=2,
            step_size=1e4,
            adapt_step_size=False,
        )
    exact = np.asarray(model.log_marginal(data))
    np.testing.assert_allclose(res.log_marginal, exact, rtol=1e-4)
    np.testing.assert_allclose(res.log_weight_variance, 0.0, atol=1e-6)
    assert res.log_weights.shape == (3, 4)


def test_evaluate_bdmc_on_simulated_data(problem):
    model, *_ = problem
    x, z = model.sample(jax.random.key(5), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = A.evaluate_bdmc(
            jax.random.key(2),
            model.bias,
            _view_fn(model),
            x,
            z,
            num_steps=20,
            num_chains=8,
            start="prior",
            data_chunk=2,
            num_leapfrog=4,
            step_size=0.3,
            adapt_step_size=False,
        )
    exact = np.asarray(model.log_marginal(x))
    assert res.gap.shape == (3,)
    # loose: each example is one run; the bracket is tested statistically above.
    assert np.all(res.lower.log_marginal < exact + 0.5) and np.all(
        res.upper.log_marginal > exact - 0.5
    )
    np.testing.assert_allclose(res.gap, res.upper.log_marginal - res.lower.log_marginal, rtol=1e-6)


def test_ais_grad_and_jit(problem):
    """log p_hat is differentiable in the model (HMC's accept step is piecewise constant).

    T = 1 is importance sampling: its gradient is that of log mean_c p(x, z_c) / q(z_c).
    One compiled program for both checks.
    """
    model, x, *_ = problem
    prior = model.prior()
    z = prior.sample(seed=jax.random.split(jax.random.key(4), 3)[1], sample_shape=(8,))

    def ais(bias, key, num_steps, num_chains, **kw):
        m = model._replace(bias=bias)
        return A.annealed_importance_sampling(
            key, m.log_joint_fn(x[0]), prior, num_steps, num_chains, **kw
        ).log_marginal

    def is_est(bias):
        lw = model._replace(bias=bias).log_joint_fn(x[0])(z) - prior.log_prob(z)
        return jax.nn.logsumexp(lw) - jnp.log(8.0)

    @jax.jit
    def both(bias):
        value_grad = jax.value_and_grad(ais)(bias, jax.random.key(3), 2, 4, num_leapfrog=1)
        return value_grad, jax.grad(ais)(bias, jax.random.key(4), 1, 8), jax.grad(is_est)(bias)

    (value, grad), g_ais1, g_is = both(model.bias)
    assert np.isfinite(value) and grad.shape == model.bias.shape
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    np.testing.assert_allclose(g_ais1, g_is, rtol=1e-4)


def test_schedules():
    for name in A.SCHEDULES:
        b = A.annealing_schedule(10, name)
        assert b.shape == (11,) and b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)
    np.testing.assert_array_equal(A.annealing_schedule(1), [0.0, 1.0])


def test_refusals(problem):
    model, x, z, _ = problem
    lj, prior = model.log_joint_fn(x[0]), model.prior()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`num_steps`"):
        A.annealed_importance_sampling(key, lj, prior, 0, 4)
    with pytest.raises(ValueError, match="`num_chains`"):
        A.annealed_importance_sampling(key, lj, prior, 4, 0)
    with pytest.raises(TypeError, match="`num_chains`"):
        A.annealed_importance_sampling(key, lj, prior, 4, 2.0)
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="`step_size`"):
            A.annealed_importance_sampling(key, lj, prior, 4, 2, step_size=bad)
    with pytest.raises(ValueError, match="`target_acceptance`"):
        A.annealed_importance_sampling(key, lj, prior, 4, 2, target_acceptance=1.0)
    with pytest.raises(ValueError, match="`schedule`"):
        A.annealed_importance_sampling(key, lj, prior, 4, 2, schedule="cosine")
    with pytest.raises(ValueError, match="`schedule`"):
        A.annealed_importance_sampling(key, lj, prior, 2, 2, schedule=np.array([0.0, 0.7, 0.5]))
    with pytest.raises(ValueError, match="`q`"):
        A.annealed_importance_sampling(key, model.log_joint_fn(x), model.posterior(x), 4, 2)
    with pytest.raises(TypeError, match="`log_joint`"):
        A.annealed_importance_sampling(key, None, prior, 4, 2)
    with pytest.raises(ValueError, match="`exact_sample`"):
        A.bdmc(key, lj, prior, z, 4, 2)
    with pytest.raises(ValueError, match="`latents`"):
        A.evaluate_bdmc(key, model.bias, _view_fn(model), x, z[:1])
    with pytest.raises(ValueError, match="`start`"):
        A.evaluate_ais(key, model.bias, _view_fn(model), x, start="data")

    class NoSim:
        pass

    with pytest.raises(TypeError, match="`model`.*simulate"):
        A.require_simulate(NoSim())

    class Sim:
        def simulate(self, key, num):
            x, z = model.sample(key, num)
            return z, x

    assert callable(A.require_simulate(Sim()))
    with pytest.raises(ValueError, match="`log_joint`"):
        A.annealed_importance_sampling(key, lambda zz: jnp.zeros((zz.shape[0], 2)), prior, 2, 2)


def test_chunks_split_over_processes_equal_one_process():
    """Each of P processes runs every P-th chunk; gathered, the result is the 1-process one.

    The all-gather is simulated: each rank's local stack is computed by `_chunked` itself
    (with a recording `allgather`), then the stacks are handed back in rank order.
    """
    data = jnp.arange(7.0)[:, None] * jnp.ones((1, 2))
    calls = []

    def run(keys, x):
        calls.append(int(x[0, 0]))
        u = jax.vmap(jax.random.uniform)(keys)  # one key per example, as AIS uses them
        return {"v": x[:, 0] + u, "k": jnp.stack([u, -u], -1)}

    key = jax.random.key(0)
    one = A._chunked(run, (data,), key, 2, False, "")
    for count in (2, 3, 5):  # 4 chunks: P = 5 leaves a process without one of its own
        stacks = []

        def record(t, count=count):
            stacks.append(t)
            return jax.tree_util.tree_map(lambda v: np.stack([v] * count), t)

        for rank in range(count):
            calls.clear()
            A._chunked(run, (data,), key, 2, False, "", process_index=rank,
                       process_count=count, allgather=record)  # fmt: skip
            own = [2 * i for i in range(rank, 4, count)]
            assert calls[: len(own)] == own  # only its own chunks (then a repeat, if short)
            assert len(calls) == -(-4 // count)
        gathered = jax.tree_util.tree_map(lambda *v: np.stack(v), *stacks)
        res = A._chunked(run, (data,), key, 2, False, "", process_index=0,
                         process_count=count, allgather=lambda t, g=gathered: g)  # fmt: skip
        for name in ("v", "k"):
            np.testing.assert_array_equal(res[name], one[name])
    assert one["v"].shape == (7,)
