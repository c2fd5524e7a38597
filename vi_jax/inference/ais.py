"""Annealed importance sampling (Neal 2001) for log p(x), and bidirectional Monte Carlo.

AIS moves C chains from a starting distribution q0 (the encoder's q(z|x), or the prior)
to the posterior p(z | x) through the geometric path

    f_t(z) = q0(z)^(1 - beta_t) p(x, z)^beta_t,    0 = beta_0 < ... < beta_T = 1,

with one HMC transition (blackjax) leaving each intermediate f_t invariant. The log
weight of a chain, sum_t (beta_t - beta_{t-1}) [log p(x, z_{t-1}) - log q0(z_{t-1})],
has E[exp(log w)] = p(x) exactly, for any T and any step sizes fixed before the run:
log mean_c exp(log w_c) is a stochastic lower bound of log p(x) whose gap shrinks as T
grows. With T = 1 it is importance sampling with C samples.

Run in reverse from an exact posterior sample (available when the data were simulated
from the model), the same recursion gives an unbiased estimate of 1 / p(x), hence a
stochastic upper bound; lower and upper bounds together are BDMC (Grosse, Ghahramani &
Adams 2015; Wu, Burda, Salakhutdinov & Grosse 2017), whose gap bounds the error of
the evaluation on simulated data.

Step sizes are adapted per example on a separate pilot run (independent chains) toward
a target acceptance rate, and then frozen for the real run, so that adaptation does not
bias the estimate.

`annealed_importance_sampling` and `bdmc` work on one example (q with batch `[]`);
`evaluate_ais` and `evaluate_bdmc` drive a model over a data set, vmapping examples
within a chunk and looping over chunks so that memory stays bounded; in a multi-process
run (`jax.distributed`) each process runs every P-th chunk and the results are
all-gathered, so the evaluation is split over the processes instead of repeated on each.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vi_jax._validation import (
    check_callable,
    check_finite,
    check_positive_float,
    check_positive_int,
    is_concrete,
)
from vi_jax.types import Array, ModelFn

SCHEDULES = ("sigmoid", "linear", "geometric")
"""Names accepted by the `schedule` argument."""

COLLAPSE_ACCEPTANCE = 0.05
"""Mean acceptance rate below which `evaluate_ais` warns that an example's chains are stuck."""


class AISResult(NamedTuple):
    """One AIS run (forward or reverse) on one example, or `[N]`-stacked by a driver.

    Attributes:
      log_marginal: the estimate of log p(x). Forward: log mean_c w_c (a stochastic
        lower bound). Reverse: -log mean_c w_c (a stochastic upper bound).
      stderr: its Monte Carlo standard error across chains (delta method,
        sd_c(w) / (sqrt(C) mean_c(w)), computed stably in log space).
      log_weights: `[C]` the chains' log weights (reverse: of 1 / p(x)).
      log_weight_variance: variance of `log_weights` across chains (0 when the chains
        are at equilibrium; large values flag too few steps).
      acceptance_rate: mean HMC acceptance probability over chains and steps (NaN for
        T = 1: no transition).
      step_sizes: `[T - 1]` the HMC step size used at each intermediate distribution.
    """

    log_marginal: Array
    stderr: Array
    log_weights: Array
    log_weight_variance: Array
    acceptance_rate: Array
    step_sizes: Array


class BDMCResult(NamedTuple):
    """Bidirectional Monte Carlo on one example (or `[N]`-stacked).

    Attributes:
      lower: forward AIS from q0: E[lower.log_marginal] <= log p(x).
      upper: reverse AIS from the exact posterior sample: E[upper.log_marginal] >= log p(x).
      gap: `upper.log_marginal - lower.log_marginal` (an upper bound, in expectation, on
        how far either estimate is from log p(x)).
    """

    lower: AISResult
    upper: AISResult
    gap: Array


def annealing_schedule(num_steps: int, schedule: str = "sigmoid", *, sharpness: float = 4.0):
    """Inverse temperatures `[T + 1]`, from beta_0 = 0 to beta_T = 1, increasing.

    Args:
      num_steps: T >= 1 intermediate transitions of the weight.
      schedule: "sigmoid" (Grosse et al. 2015: dense at both ends, the default),
        "linear", or "geometric" (log-spaced from 1e-4, dense near 0).
      sharpness: the sigmoid's range, sigmoid(linspace(-s, s)) rescaled to [0, 1].

    Returns:
      A NumPy float64 array `[T + 1]` (static: it fixes the compiled program's loop).
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {list(SCHEDULES)}, got {schedule!r}.")
    check_positive_float(sharpness, "sharpness")
    u = np.linspace(0.0, 1.0, num_steps + 1)
    if schedule == "linear" or num_steps == 1:
        betas = u
    elif schedule == "geometric":
        betas = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, num_steps)])
    else:
        s = 1.0 / (1.0 + np.exp(-sharpness * (2.0 * u - 1.0)))
        betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def _betas(num_steps: int, schedule: Any) -> Array:
    """The schedule `[T + 1]`: by name, or given (checked when concrete)."""
    if isinstance(schedule, str):
        return jnp.asarray(annealing_schedule(num_steps, schedule))
    betas = jnp.asarray(schedule)
    if betas.shape != (num_steps + 1,):
        raise ValueError(
            f"`schedule` given as an array must have shape [num_steps + 1] = "
            f"[{num_steps + 1}], got {betas.shape}."
        )
    if is_concrete(betas):
        b = np.asarray(betas)
        if not (b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) >= 0)):
            raise ValueError(
                "`schedule` must increase (weakly) from beta_0 = 0 to beta_T = 1, got "
                f"{b[:3]} ... {b[-3:]}."
            )
    return betas


def _log_mean_exp(log_w: Array) -> Array:
    m = jnp.max(log_w)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return m + jnp.log(jnp.mean(jnp.exp(log_w - m)))


def _log_stderr_ratio(log_w: Array) -> Array:
    """sd(w) / (sqrt(C) mean(w)) from log weights, without overflow."""
    c = log_w.shape[0]
    if c < 2:
        return jnp.full((), jnp.nan, log_w.dtype)
    w = jnp.exp(log_w - jnp.max(log_w))
    return jnp.std(w, ddof=1) / (jnp.sqrt(c) * jnp.mean(w))


def _summarise(log_w: Array, acc: Array, eps: Array, sign: float) -> AISResult:
    acc_rate = jnp.mean(acc) if acc.shape[0] > 0 else jnp.full((), jnp.nan, log_w.dtype)
    return AISResult(
        log_marginal=sign * _log_mean_exp(log_w),
        stderr=_log_stderr_ratio(log_w),
        log_weights=log_w,
        log_weight_variance=jnp.var(log_w, ddof=1) if log_w.shape[0] > 1 else jnp.zeros(()),
        acceptance_rate=acc_rate,
        step_sizes=eps,
    )


def _check_common(num_steps, num_chains, step_size, num_leapfrog, target_acceptance):
    num_steps = check_positive_int(num_steps, "num_steps")
    num_chains = check_positive_int(num_chains, "num_chains")
    step_size = check_positive_float(step_size, "step_size")
    num_leapfrog = check_positive_int(num_leapfrog, "num_leapfrog")
    target_acceptance = check_positive_float(target_acceptance, "target_acceptance")
    if not target_acceptance < 1:
        raise ValueError(f"`target_acceptance` must be in (0, 1), got {target_acceptance}.")
    return num_steps, num_chains, step_size, num_leapfrog, target_acceptance


def _check_q(log_joint: Callable, q: distrax.Distribution) -> int:
    check_callable(log_joint, "log_joint")
    if not isinstance(q, distrax.Distribution):
        raise TypeError(f"`q` must be a distrax distribution, got {type(q).__name__}.")
    if tuple(q.batch_shape) != () or len(q.event_shape) != 1:
        raise ValueError(
            "`q` must describe one example: batch shape [] and event [latent], got batch "
            f"{tuple(q.batch_shape)} and event {tuple(q.event_shape)}; vmap over "
            "examples (or use `evaluate_ais`)."
        )
    return int(q.event_shape[0])


def _sweep(
    key: Array,
    z0: Array,
    log_q: Callable[[Array], Array],
    log_joint: Callable[[Array], Array],
    betas: Array,
    log_eps: Array,
    *,
    reverse: bool,
    adapt: bool,
    num_leapfrog: int,
    target_acceptance: float,
    adaptation_rate: float,
) -> tuple[Array, Array, Array]:
    """One AIS pass over chains z0 `[C, D]`.

    Returns log weights `[C]`, mean acceptances `[T - 1]` and step sizes `[T - 1]` (the
    adapted ones when `adapt`, else exp(log_eps)).
    """
    num_chains, dim = z0.shape
    d_beta = jnp.diff(betas)  # [T]
    if reverse:
        # x_{T-1} ~ f_T exactly; weights f_{t-1}/f_t, transitions at beta_{T-1}..beta_1.
        trans_betas, increments = betas[1:-1][::-1], -d_beta[::-1]
        log_eps = log_eps[::-1]
    else:
        trans_betas, increments = betas[1:-1], d_beta
    dtype = z0.dtype
    # Imported here: blackjax runs a computation at import, which would start the XLA
    # backend before a multi-host run's jax.distributed.initialize (vi-jax --coordinator).
    import blackjax

    kernel = blackjax.mcmc.hmc.build_kernel()
    inv_mass = jnp.ones((dim,), dtype)

    def g(z: Array) -> Array:  # log p(x, z) - log q0(z), [C]
        return log_joint(z) - log_q(z)

    def one_chain_step(k, z, beta, eps):
        def logdensity(zz):
            zz = zz[None]
            return (log_q(zz) + beta * g(zz))[0]

        state = blackjax.mcmc.hmc.init(z, logdensity)
        state, info = kernel(k, state, logdensity, eps, inv_mass, num_leapfrog)
        return state.position, info.acceptance_rate

    def body(carry, inp):
        z, log_w, log_eps_c = carry
        k, beta, incr, log_eps_fixed = inp
        log_eps_t = log_eps_c if adapt else log_eps_fixed
        eps = jnp.exp(log_eps_t)
        z, acc = jax.vmap(one_chain_step, in_axes=(0, 0, None, None))(
            jax.random.split(k, num_chains), z, beta, eps
        )
        # A NaN acceptance (a diverging trajectory) counts as a rejection for adaptation.
        mean_acc = jnp.mean(jnp.where(jnp.isnan(acc), 0.0, acc))
        if adapt:
            log_eps_c = log_eps_c + adaptation_rate * (mean_acc - target_acceptance)
        log_w = log_w + incr * g(z)
        return (z, log_w, log_eps_c), (mean_acc, log_eps_t)

    log_w0 = increments[0] * g(z0)
    n = len(trans_betas)
    xs = (
        jax.random.split(key, n),
        jnp.asarray(trans_betas, dtype),
        jnp.asarray(increments[1:], dtype),
        jnp.asarray(log_eps, dtype),
    )
    init = (z0, log_w0, jnp.asarray(log_eps[0] if n else 0.0, dtype))
    (_, log_w, _), (acc, used_log_eps) = jax.lax.scan(body, init, xs, length=n)
    if reverse:
        acc, used_log_eps = acc[::-1], used_log_eps[::-1]
    return log_w, acc, jnp.exp(used_log_eps)


def _step_sizes(key, q, log_q, log_joint, betas, step_size, adapt, pilot_chains, **kw) -> Array:
    """Per-step sizes `[T - 1]`: a constant, or adapted on an independent pilot run."""
    n = len(betas) - 2
    log_eps = jnp.full((n,), math.log(step_size), q.dtype if hasattr(q, "dtype") else None)
    if not adapt or n == 0:
        return log_eps
    z = q.sample(seed=key, sample_shape=(pilot_chains,))
    _, _, eps = _sweep(
        jax.random.fold_in(key, 1),
        z,
        log_q,
        log_joint,
        betas,
        log_eps,
        reverse=False,
        adapt=True,
        **kw,
    )
    return jnp.log(eps)


def _prepare(
    log_joint,
    q,
    num_steps,
    num_chains,
    step_size,
    num_leapfrog,
    target_acceptance,
    schedule,
    adaptation_rate,
):
    num_steps, num_chains, step_size, num_leapfrog, target_acceptance = _check_common(
        num_steps, num_chains, step_size, num_leapfrog, target_acceptance
    )
    _check_q(log_joint, q)
    adaptation_rate = check_positive_float(adaptation_rate, "adaptation_rate")
    betas = _betas(num_steps, schedule)

    def log_joint_checked(z: Array) -> Array:
        value = log_joint(z)
        if tuple(jnp.shape(value)) != (z.shape[0],):
            raise ValueError(
                f"`log_joint` must map z of shape {tuple(z.shape)} to [{z.shape[0]}], got "
                f"{jnp.shape(value)}."
            )
        return value

    kw = dict(
        num_leapfrog=num_leapfrog,
        target_acceptance=target_acceptance,
        adaptation_rate=adaptation_rate,
    )
    return num_chains, step_size, betas, log_joint_checked, kw


def annealed_importance_sampling(
    key: Array,
    log_joint: Callable[[Array], Array],
    q: distrax.Distribution,
    num_steps: int,
    num_chains: int,
    *,
    step_size: float = 0.05,
    adapt_step_size: bool = True,
    target_acceptance: float = 0.65,
    num_leapfrog: int = 10,
    schedule: str = "sigmoid",
    pilot_chains: int | None = None,
    adaptation_rate: float = 1.0,
) -> AISResult:
    """Annealed importance sampling estimate of log p(x) for one example.

    Args:
      key: PRNG key.
      log_joint: `z [C, latent] -> log p(x, z) [C]` for this example.
      q: the starting distribution q0 (encoder posterior or prior), batch `[]`, event
        `[latent]`; it must have a `log_prob` and a `sample`.
      num_steps: T >= 1 annealing steps (T - 1 HMC transitions; T = 1 is importance
        sampling with `num_chains` samples).
      num_chains: C >= 1 independent chains.
      step_size: HMC step size > 0 (the initial one when adapting).
      adapt_step_size: adapt the step size per intermediate distribution on a pilot run,
        log eps += adaptation_rate * (acceptance - target), then freeze it.
      target_acceptance: in (0, 1); 0.65 as in Wu et al. (2017).
      num_leapfrog: leapfrog steps per HMC transition (static).
      schedule: "sigmoid", "linear" or "geometric" (see `annealing_schedule`), or the
        inverse temperatures `[T + 1]` themselves (0 to 1, non-decreasing; may be traced,
        so one compiled program serves several schedules of the same length: a T-step
        schedule padded with trailing 1s gives the T-step estimate).
      pilot_chains: chains of the pilot run (default: `num_chains`).
      adaptation_rate: > 0, the gain of the step-size adaptation.

    Returns:
      `AISResult` with scalar `log_marginal`, `stderr`, `log_weight_variance`,
      `acceptance_rate`, and `log_weights [C]`, `step_sizes [T - 1]`.
    """
    num_chains, step_size, betas, lj, kw = _prepare(
        log_joint,
        q,
        num_steps,
        num_chains,
        step_size,
        num_leapfrog,
        target_acceptance,
        schedule,
        adaptation_rate,
    )
    pilot = num_chains if pilot_chains is None else check_positive_int(pilot_chains, "pilot_chains")
    k_pilot, k_init, k_run = jax.random.split(key, 3)
    log_eps = _step_sizes(
        k_pilot, q, q.log_prob, lj, betas, step_size, adapt_step_size, pilot, **kw
    )
    z0 = q.sample(seed=k_init, sample_shape=(num_chains,))
    log_w, acc, eps = _sweep(
        k_run, z0, q.log_prob, lj, betas, log_eps, reverse=False, adapt=False, **kw
    )
    return _summarise(log_w, acc, eps, 1.0)


def reverse_ais(
    key: Array,
    log_joint: Callable[[Array], Array],
    q: distrax.Distribution,
    exact_sample: Array,
    num_steps: int,
    num_chains: int,
    *,
    step_sizes: Array | None = None,
    step_size: float = 0.05,
    num_leapfrog: int = 10,
    schedule: str = "sigmoid",
) -> AISResult:
    """Reverse AIS from an exact posterior sample: a stochastic upper bound on log p(x).

    Args:
      key: PRNG key.
      log_joint: `z [C, latent] -> log p(x, z) [C]` for this example.
      q: the distribution the path ends at (batch `[]`, event `[latent]`).
      exact_sample: `[latent]` a draw from p(z | x) (the z that generated x).
      num_steps: T >= 1.
      num_chains: C >= 1 chains, all started at `exact_sample`.
      step_sizes: `[T - 1]` step sizes (e.g. the `step_sizes` of a forward run), or None
        for a constant `step_size`.
      step_size: constant step size > 0 when `step_sizes` is None.
      num_leapfrog: leapfrog steps per transition.
      schedule: the annealing schedule (same as the forward run).

    Returns:
      `AISResult` whose `log_marginal` is -log mean_c w_c, E >= log p(x).
    """
    num_chains, step_size, betas, lj, kw = _prepare(
        log_joint, q, num_steps, num_chains, step_size, num_leapfrog, 0.5, schedule, 1.0
    )
    dim = int(q.event_shape[0])
    if jnp.shape(exact_sample) != (dim,):
        raise ValueError(f"`exact_sample` must have shape ({dim},), got {jnp.shape(exact_sample)}.")
    n = len(betas) - 2
    if step_sizes is None:
        log_eps = jnp.full((n,), math.log(step_size))
    else:
        if jnp.shape(step_sizes) != (n,):
            raise ValueError(f"`step_sizes` must have shape ({n},), got {jnp.shape(step_sizes)}.")
        log_eps = jnp.log(step_sizes)
    z0 = jnp.broadcast_to(jnp.asarray(exact_sample), (num_chains, dim))
    log_w, acc, eps = _sweep(
        key, z0, q.log_prob, lj, betas, log_eps, reverse=True, adapt=False, **kw
    )
    return _summarise(log_w, acc, eps, -1.0)


def bdmc(
    key: Array,
    log_joint: Callable[[Array], Array],
    q: distrax.Distribution,
    exact_sample: Array,
    num_steps: int,
    num_chains: int,
    **options: Any,
) -> BDMCResult:
    """Bidirectional Monte Carlo: forward AIS (lower) and reverse AIS (upper) bounds.

    The reverse run uses the step sizes the forward run adapted.

    Args:
      key: PRNG key.
      log_joint: `z [C, latent] -> log p(x, z) [C]` for one example simulated from the
        model.
      q: the starting distribution (batch `[]`, event `[latent]`).
      exact_sample: `[latent]` the latent that generated the example.
      num_steps: T >= 1.
      num_chains: C >= 1 chains in each direction.
      **options: keyword options of `annealed_importance_sampling` (step_size,
        num_leapfrog, schedule, ...).

    Returns:
      `BDMCResult(lower, upper, gap)`.
    """
    dim = _check_q(log_joint, q)
    if jnp.shape(exact_sample) != (dim,):
        raise ValueError(f"`exact_sample` must have shape ({dim},), got {jnp.shape(exact_sample)}.")
    k_fwd, k_rev = jax.random.split(key)
    lower = annealed_importance_sampling(k_fwd, log_joint, q, num_steps, num_chains, **options)
    rev_opts = {k: options[k] for k in ("num_leapfrog", "schedule") if k in options}
    upper = reverse_ais(
        k_rev,
        log_joint,
        q,
        exact_sample,
        num_steps,
        num_chains,
        step_sizes=lower.step_sizes,
        **rev_opts,
    )
    return BDMCResult(lower, upper, upper.log_marginal - lower.log_marginal)


# ----------------------------------------------------------------------------- drivers


def _single_example(view: Any) -> tuple[Callable[[Array], Array], distrax.Distribution]:
    """A view of a batch of one, as (`z [C, D] -> [C]`, q with batch [])."""
    q = view.posterior
    return (lambda z: view.log_joint(z[:, None])[:, 0]), _Squeezed(q)


class _Squeezed(distrax.Distribution):
    """A batch-[1] distribution seen with batch []."""

    def __init__(self, dist: distrax.Distribution) -> None:
        self._dist = dist

    @property
    def event_shape(self):
        return self._dist.event_shape

    @property
    def batch_shape(self):
        return ()

    @property
    def dtype(self):
        return self._dist.dtype

    def _sample_n(self, key: Array, n: int) -> Array:
        return self._dist.sample(seed=key, sample_shape=(n,))[:, 0]

    def log_prob(self, value: Array) -> Array:
        return self._dist.log_prob(value[..., None, :])[..., 0]


def _start(view: Any, start: str) -> Any:
    """The view with its start distribution: q(z|x), or the prior seen with batch [1]."""
    return view if start == "posterior" else view._replace(posterior=_Broadcast(view.prior))


class _Broadcast(distrax.Distribution):
    """A batch-[] distribution seen with batch [1] (the prior as a start for one example)."""

    def __init__(self, dist: distrax.Distribution) -> None:
        self._dist = dist

    @property
    def event_shape(self):
        return self._dist.event_shape

    @property
    def batch_shape(self):
        return (1,)

    @property
    def dtype(self):
        return self._dist.dtype

    def _sample_n(self, key: Array, n: int) -> Array:
        return self._dist.sample(seed=key, sample_shape=(n, 1))

    def log_prob(self, value: Array) -> Array:
        return self._dist.log_prob(value)


def _check_data(data: Any, name: str) -> int:
    if jnp.ndim(data) != 2 or jnp.shape(data)[0] < 1:
        raise ValueError(f"`{name}` must have shape [N >= 1, width], got {jnp.shape(data)}.")
    check_finite(data, name)
    return int(jnp.shape(data)[0])


def _process_allgather(tree: Any) -> Any:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=False)


def _chunked(
    run: Callable,
    arrays: tuple[Array, ...],
    key: Array,
    data_chunk: int,
    progress,
    desc,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    allgather: Callable[[Any], Any] = _process_allgather,
):
    """`run(keys [c], *chunk_arrays)` over chunks of `data_chunk` examples, gathered to `[N]`.

    In a run of P processes the chunks are dealt round-robin: chunk i runs on process
    i % P only (AIS is the costliest evaluation, so each process does 1/P of it rather
    than all of it redundantly), and the results are all-gathered so that every process
    returns the whole `[N]` result. Chunk i always uses the key `fold_in(key, i)`: the
    result does not depend on P. `process_index`, `process_count` and `allgather`
    default to JAX's (one process: no collective).
    """
    n = int(arrays[0].shape[0])
    data_chunk = min(data_chunk, n)
    num_chunks = -(-n // data_chunk)
    rank = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    mine = list(range(rank, num_chunks, count))
    # Every process computes the same number of chunks (the all-gather needs equal
    # shapes); a process short of one repeats a chunk whose result is then dropped.
    per_process = -(-num_chunks // count)
    todo = mine + [mine[-1] if mine else 0] * (per_process - len(mine))
    if progress:
        from vi_jax._progress import tqdm

        todo = tqdm(todo, desc=desc, unit="chunk", leave=False)
    outs = []
    for i in todo:
        s = i * data_chunk
        parts = [a[s : s + data_chunk] for a in arrays]
        size = parts[0].shape[0]
        if size < data_chunk:  # pad, so that one compiled program serves every chunk
            parts = [jnp.concatenate([p, jnp.repeat(p[-1:], data_chunk - size, 0)]) for p in parts]
        keys = jax.random.split(jax.random.fold_in(key, i), data_chunk)
        outs.append(jax.tree_util.tree_map(np.asarray, run(keys, *parts)))
    local = jax.tree_util.tree_map(lambda *v: np.stack(v), *outs)  # [per_process, chunk, ...]
    if count > 1:
        gathered = allgather(local)  # [P, per_process, chunk, ...]
    else:
        gathered = jax.tree_util.tree_map(lambda v: v[None], local)

    def assemble(v):
        v = np.asarray(v)
        chunks = [v[i % count, i // count] for i in range(num_chunks)]
        return np.concatenate(chunks)[:n]

    return jax.tree_util.tree_map(assemble, gathered)


def _warn_collapse(acc: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(np.asarray(acc) < COLLAPSE_ACCEPTANCE)
    if bad.size:
        shown = ", ".join(map(str, bad[:20])) + (" ..." if bad.size > 20 else "")
        warnings.warn(
            f"{what}: the HMC acceptance rate collapsed (< {COLLAPSE_ACCEPTANCE}) for "
            f"{bad.size} example(s), indices [{shown}]; their estimates are unreliable. "
            "Lower `step_size`, raise `num_steps`, or check the model for NaNs.",
            RuntimeWarning,
            stacklevel=3,
        )


def evaluate_ais(
    key: Array,
    params: Any,
    model_fn: ModelFn,
    data: Array | np.ndarray,
    *,
    num_steps: int = 100,
    num_chains: int = 16,
    start: str = "posterior",
    data_chunk: int = 25,
    progress: bool = False,
    **options: Any,
) -> AISResult:
    """AIS log-likelihood of every example of a data set.

    Args:
      key: PRNG key.
      params: model parameters, passed to `model_fn`.
      model_fn: `model_fn(params, x [B, data]) -> ModelView` (e.g. `vae_view(...)`).
      data: `[N, data]` examples.
      num_steps: T >= 1.
      num_chains: C >= 1 chains per example.
      start: "posterior" (the encoder's q(z|x), the default) or "prior".
      data_chunk: examples vmapped per compiled call (memory ~ data_chunk * C).
      progress: show a tqdm bar over chunks.
      **options: keyword options of `annealed_importance_sampling`.

    Returns:
      `AISResult` of NumPy arrays with a leading `[N]` axis, on every process (in a
      multi-process run each process computes every P-th chunk; the chunks' keys do not
      depend on P, so the result equals the one-process one). Warns (RuntimeWarning),
      naming the examples, when an example's acceptance rate collapses.
    """
    if start not in ("posterior", "prior"):
        raise ValueError(f"`start` must be 'posterior' or 'prior', got {start!r}.")
    check_callable(model_fn, "model_fn")
    _check_data(data, "data")
    data_chunk = check_positive_int(data_chunk, "data_chunk")
    _check_common(
        num_steps,
        num_chains,
        options.get("step_size", 0.05),
        options.get("num_leapfrog", 10),
        options.get("target_acceptance", 0.65),
    )

    def one(k, x):
        view = _start(model_fn(params, x[None]), start)
        lj, q = _single_example(view)
        return annealed_importance_sampling(k, lj, q, num_steps, num_chains, **options)

    run = jax.jit(jax.vmap(one))
    res = _chunked(run, (jnp.asarray(data),), key, data_chunk, progress, f"AIS (T={num_steps})")
    res = AISResult(*res)
    if num_steps > 1:
        _warn_collapse(res.acceptance_rate, "evaluate_ais")
    return res


def require_simulate(model: Any) -> Callable:
    """`model.simulate`, or a TypeError saying that BDMC needs data simulated from the model."""
    sim = getattr(model, "simulate", None)
    if not callable(sim):
        raise TypeError(
            f"`model` ({type(model).__name__}) has no `simulate(key, num) -> (z, x)` method; "
            "BDMC needs data simulated from the model (an exact posterior sample per example)."
        )
    return sim


def evaluate_bdmc(
    key: Array,
    params: Any,
    model_fn: ModelFn,
    data: Array | np.ndarray,
    latents: Array | np.ndarray,
    *,
    num_steps: int = 100,
    num_chains: int = 16,
    start: str = "posterior",
    data_chunk: int = 25,
    progress: bool = False,
    **options: Any,
) -> BDMCResult:
    """BDMC bounds on log p(x) for examples simulated from the model.

    Args:
      key: PRNG key.
      params: model parameters.
      model_fn: `model_fn(params, x [B, data]) -> ModelView`.
      data: `[N, data]` examples simulated from the model (e.g. by `vae.simulate`).
      latents: `[N, latent]` the latents that generated them (exact posterior samples).
      num_steps: T >= 1.
      num_chains: C >= 1 chains per example in each direction.
      start: "posterior" or "prior", the end of the path opposite p(z | x).
      data_chunk: examples per compiled call.
      progress: show a tqdm bar.
      **options: keyword options of `annealed_importance_sampling`.

    Returns:
      `BDMCResult` of NumPy arrays with a leading `[N]` axis, on every process (split
      over the processes of a multi-process run, as in `evaluate_ais`).
    """
    if start not in ("posterior", "prior"):
        raise ValueError(f"`start` must be 'posterior' or 'prior', got {start!r}.")
    check_callable(model_fn, "model_fn")
    n = _check_data(data, "data")
    if _check_data(latents, "latents") != n:
        raise ValueError(f"`latents` must have {n} rows like `data`, got {jnp.shape(latents)[0]}.")
    data_chunk = check_positive_int(data_chunk, "data_chunk")

    def one(k, x, z):
        view = _start(model_fn(params, x[None]), start)
        lj, q = _single_example(view)
        return bdmc(k, lj, q, z, num_steps, num_chains, **options)

    run = jax.jit(jax.vmap(one))
    arrays = (jnp.asarray(data), jnp.asarray(latents))
    res = _chunked(run, arrays, key, data_chunk, progress, f"BDMC (T={num_steps})")
    res = BDMCResult(AISResult(*res[0]), AISResult(*res[1]), res[2])
    if num_steps > 1:
        _warn_collapse(res.lower.acceptance_rate, "evaluate_bdmc (forward)")
        _warn_collapse(res.upper.acceptance_rate, "evaluate_bdmc (reverse)")
    return res
