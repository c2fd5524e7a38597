"""Evaluation of a latent-variable model on a data set.

The standard protocol (Burda et al. 2016): the test log-likelihood estimated by
importance sampling with the model's own q(z|x) as proposal and K = 5000 samples, the
ELBO with its reconstruction and KL terms, and the number of active latent units.
Memory stays bounded for any K and any data set size: examples are processed in chunks
of `data_chunk` (one compiled program, called once per chunk from the host, which also
drives a progress bar) and samples in chunks of `sample_chunk` inside it.

A model is seen through `model_fn(params, x) -> ModelView`, so this module needs no
knowledge of Flax: a VAE provides its view with `vi_jax.models.vae_view`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vi_jax._validation import check_finite, check_positive_float, check_positive_int, check_rank
from vi_jax.diagnostics.latent import latent_activity
from vi_jax.estimators import bounds
from vi_jax.estimators.chunking import largest_divisor
from vi_jax.estimators.importance import importance_log_marginal
from vi_jax.training.sharding import (
    batch_sharding,
    check_mesh,
    data_parallel_size,
    replicate,
    replicated_sharding,
)
from vi_jax.types import Array, ModelFn


class Evaluation(NamedTuple):
    """Per-example results, each `[N]`, and the active-unit statistics.

    Attributes:
      log_likelihood: importance-sampled log p(x).
      log_likelihood_mc_stderr: its Monte Carlo standard error per example (delta
        method, sd(p_hat) / p_hat); the estimate is biased low by about half its square.
      elbo: ELBO estimate (reconstruction - KL).
      recon: E_q[log p(x|z)] estimate.
      kl: KL(q(z|x) || p(z)) (closed form where distrax has it).
      posterior_mean_variance: `[latent]` Cov_x(E_q[z]) diagonal (Burda et al.'s
        activity statistic).
    """

    log_likelihood: np.ndarray
    log_likelihood_mc_stderr: np.ndarray
    elbo: np.ndarray
    recon: np.ndarray
    kl: np.ndarray
    posterior_mean_variance: np.ndarray

    def num_active_units(self, threshold: float = 0.01) -> int:
        """Number of latent dimensions whose activity exceeds `threshold` (0.01 in Burda et al.)."""
        return int(np.sum(np.asarray(self.posterior_mean_variance) > threshold))

    def active_units(self, threshold: float = 0.01) -> int:
        """The old name of `num_active_units`, kept."""
        return self.num_active_units(threshold)

    def summary(self, threshold: float = 0.01) -> dict[str, float]:
        """Means and standard errors over examples, in nats, plus active units."""
        out: dict[str, float] = {"num_examples": int(self.log_likelihood.shape[0])}
        for name in ("log_likelihood", "elbo", "recon", "kl"):
            v = np.asarray(getattr(self, name), np.float64)
            out[name] = float(v.mean())
            out[name + "_stderr"] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
        out["nll"] = -out["log_likelihood"]
        # Monte Carlo error of the mean estimate (the stderr above is over examples).
        mc = np.asarray(self.log_likelihood_mc_stderr, np.float64)
        out["log_likelihood_mc_stderr"] = float(np.sqrt(np.sum(mc**2)) / len(mc))
        out["active_units"] = self.num_active_units(threshold)
        return out


def posterior_mean(q: distrax.Distribution) -> Array:
    """E_q[z] `[B, latent]`; distrax gives it in closed form for the Gaussian families."""
    return q.mean()


# Cached so that evaluating the same `model_fn` again (every few epochs, or a notebook
# loop) reuses the compiled program instead of tracing and compiling it anew.
@functools.lru_cache(maxsize=16)
def _chunk_fn(
    model_fn: ModelFn,
    num_samples: int,
    sample_chunk: int,
    elbo_samples: int,
    mesh: Mesh | None = None,
) -> Callable[[Any, Array, Array], dict[str, Array]]:
    def run(params: Any, x: Array, key: Array) -> dict[str, Array]:
        k_is, k_elbo = jax.random.split(key)
        view = model_fn(params, x)
        est = importance_log_marginal(
            k_is, view.log_joint, view.posterior, num_samples, chunk_size=sample_chunk
        )
        ll = est.log_marginal
        z = view.posterior.sample(seed=k_elbo, sample_shape=(elbo_samples,))
        recon = jnp.mean(view.log_likelihood(z), axis=0)
        kl = bounds.kl_divergence(k_elbo, view.posterior, view.prior, z=z)
        return {
            "log_likelihood": ll,
            # delta method: sd(log p_hat) ~ sd(p_hat) / p_hat
            "log_likelihood_mc_stderr": jnp.exp(est.log_stderr - ll),
            "recon": recon,
            "kl": kl,
            "elbo": recon - kl,
            "mean": posterior_mean(view.posterior),
        }

    if mesh is None:
        return jax.jit(run)
    # Results come back replicated so that every process (multi-host) can read them.
    return jax.jit(run, out_shardings=replicated_sharding(mesh))


def _check_log_likelihood(ll: np.ndarray) -> None:
    """Refuses a NaN or -inf log-likelihood: never a plausible-looking number."""
    nan, zero = np.isnan(ll), ll == -np.inf
    if nan.any():
        raise ValueError(
            f"The log-likelihood of {int(nan.sum())} examples of `data` is NaN (first: "
            f"index {int(np.argmax(nan))}): the model or its `params` produce NaN there."
        )
    if zero.any():
        raise ValueError(
            f"{int(zero.sum())} examples of `data` have zero likelihood (log p(x) = -inf; "
            f"first: index {int(np.argmax(zero))}): they lie outside the support of the "
            "model's likelihood (a Bernoulli decoder needs values in [0, 1])."
        )


# Elements of one `[sample_chunk * data_chunk, data]` buffer of the chunk program that
# `sample_chunk=None` aims at. On a CPU, ~2 M float32 (8 MB) keeps the decoder's output and
# the likelihood's passes over it in the last-level cache: K = 5000 evaluation of the MNIST
# VAE ran 26-35% faster at 25 x 100 than at 500 x 100 samples x images (benchmarks/README.md,
# issue 19, session 7). Elsewhere 40 M, the previous fixed default (500 x 100 x 784): an
# accelerator wants large products, and no GPU has measured a better value yet.
EVAL_CHUNK_ELEMENTS = {"cpu": 2**21}
EVAL_CHUNK_ELEMENTS_OTHER = 40_000_000


def default_sample_chunk(
    num_samples: int, data_chunk: int, data_dim: int, backend: str | None = None
) -> int:
    """The samples per scan step `evaluate_model` draws when `sample_chunk` is None.

    It aims at `sample_chunk * data_chunk * data_dim` = `EVAL_CHUNK_ELEMENTS[backend]` (2**21 on
    a CPU, 4e7 elsewhere) and takes the largest divisor of `num_samples` within a factor
    of two below that aim, so that the scan needs no remainder program; otherwise the aim.

    Args:
      num_samples: K, the importance samples per example.
      data_chunk: examples per compiled call (per device, under a mesh).
      data_dim: the width of one example.
      backend: a JAX platform name; None: `jax.default_backend()`.

    Returns:
      An int in `[1, num_samples]`.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    data_chunk = check_positive_int(data_chunk, "data_chunk")
    data_dim = check_positive_int(data_dim, "data_dim")
    backend = backend or jax.default_backend()
    aim = EVAL_CHUNK_ELEMENTS.get(backend, EVAL_CHUNK_ELEMENTS_OTHER) // (data_chunk * data_dim)
    aim = min(max(aim, 1), num_samples)
    chunk = largest_divisor(num_samples, aim, at_least=(aim + 1) // 2)
    return aim if chunk is None else chunk


def evaluate_model(
    key: Array,
    params: Any,
    model_fn: ModelFn,
    data: Array | np.ndarray,
    *,
    num_samples: int = 5000,
    sample_chunk: int | None = None,
    data_chunk: int = 100,
    elbo_samples: int = 1,
    progress: bool = False,
    mesh: Mesh | None = None,
) -> Evaluation:
    """Importance-sampled log-likelihood, ELBO terms and posterior-mean activity of a data set.

    Args:
      key: PRNG key.
      params: model parameters (any pytree), passed to `model_fn`.
      model_fn: `model_fn(params, x [B, data]) -> ModelView`, jit-able.
      data: `[N, data]` examples (already preprocessed, e.g. binarised), inside the
        support of the model's likelihood: for a Bernoulli decoder values in [0, 1].
        Grey levels in (0, 1) are accepted, but the "log-likelihood" is then minus a
        cross-entropy, not the log-probability of the data (compare it only with
        numbers computed on the same grey-level data).
      num_samples: K importance samples per example (5000 is the standard protocol).
      sample_chunk: samples drawn at a time (memory ~ sample_chunk * data_chunk * data).
        None (default): `default_sample_chunk`, sized for the backend's cache or device
        (25 for MNIST at `data_chunk` = 100 on a CPU, 500 elsewhere).
      data_chunk: examples per compiled call; the last chunk is padded and trimmed.
      elbo_samples: samples for the reconstruction term (KL is closed form where possible).
      progress: show a tqdm bar over chunks.
      mesh: a data mesh (`vi_jax.training.make_data_mesh`, or one spanning processes):
        each chunk's examples are split over its `"data"` axis (`data_chunk` is rounded
        up to a multiple of its size) and `params` replicated. The random draws do not
        depend on the layout (partitionable threefry), so the per-example results equal
        the one-device run up to floating-point reduction order. In a multi-host run
        every process passes the same `data` and gets every result.

    Returns:
      `Evaluation` with per-example `[N]` arrays; `.summary()` gives means in nats.

    Raises:
      ValueError: an argument is invalid (named), or an example's log-likelihood is NaN
        (a model bug) or -inf (data outside the likelihood's support).
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    if sample_chunk is not None:
        sample_chunk = check_positive_int(sample_chunk, "sample_chunk")
    data_chunk = check_positive_int(data_chunk, "data_chunk")
    elbo_samples = check_positive_int(elbo_samples, "elbo_samples")
    if jnp.ndim(data) != 2 or jnp.shape(data)[0] < 1:
        raise ValueError(f"`data` must have shape [N >= 1, data_dim], got {jnp.shape(data)}.")
    check_finite(data, "data")
    n = int(jnp.shape(data)[0])
    data_chunk = min(data_chunk, n)
    if mesh is not None:
        mesh = check_mesh(mesh)
        ways = data_parallel_size(mesh)
        data_chunk = -(-data_chunk // ways) * ways
        params = replicate(params, mesh)
    if sample_chunk is None:
        per_device = data_chunk // (ways if mesh is not None else 1)
        sample_chunk = default_sample_chunk(num_samples, per_device, int(jnp.shape(data)[1]))
    run = _chunk_fn(model_fn, num_samples, min(sample_chunk, num_samples), elbo_samples, mesh)
    starts = range(0, n, data_chunk)
    if progress:
        from vi_jax._progress import tqdm

        starts = tqdm(starts, desc=f"evaluate (K={num_samples})", unit="chunk", leave=False)
    outs: dict[str, list[np.ndarray]] = {}
    data = jnp.asarray(data) if mesh is None else np.asarray(data)
    xp = jnp if mesh is None else np
    for i, start in enumerate(starts):
        x = data[start : start + data_chunk]
        size = x.shape[0]
        if size < data_chunk:  # pad, so that one compiled program serves every chunk
            x = xp.concatenate([x, xp.repeat(x[-1:], data_chunk - size, axis=0)])
        if mesh is not None:
            x = _shard_chunk(x, mesh)
        res = run(params, x, jax.random.fold_in(key, i))
        for name, value in res.items():
            outs.setdefault(name, []).append(np.asarray(value)[:size])
    cat = {name: np.concatenate(v) for name, v in outs.items()}
    _check_log_likelihood(cat["log_likelihood"])
    return Evaluation(
        log_likelihood=cat["log_likelihood"],
        log_likelihood_mc_stderr=cat["log_likelihood_mc_stderr"],
        elbo=cat["elbo"],
        recon=cat["recon"],
        kl=cat["kl"],
        posterior_mean_variance=np.var(cat["mean"], axis=0),
    )


def _shard_chunk(x: np.ndarray, mesh: Mesh) -> Array:
    # Each device (of every process) receives only its block of the chunk's examples.
    return jax.make_array_from_callback(x.shape, batch_sharding(mesh), lambda index: x[index])


def model_active_units(
    params: Any,
    model_fn: ModelFn,
    data: Array | np.ndarray,
    *,
    threshold: float = 0.01,
    data_chunk: int = 1000,
) -> tuple[int, np.ndarray]:
    """Active units (Burda et al. 2016): dimensions u with Cov_x(E_q[z_u | x]) > threshold.

    Args:
      params: model parameters.
      model_fn: `model_fn(params, x) -> ModelView`.
      data: `[N, data]` examples.
      threshold: activity threshold (0.01 in the paper).
      data_chunk: examples per compiled call.

    Returns:
      `(count, activity [latent])`.
    """
    threshold = check_positive_float(threshold, "threshold")
    data_chunk = check_positive_int(data_chunk, "data_chunk")
    check_rank(data, 2, "data", "[N, data_dim]")
    fn = jax.jit(lambda p, x: posterior_mean(model_fn(p, x).posterior))
    means = np.concatenate(
        [np.asarray(fn(params, data[i : i + data_chunk])) for i in range(0, len(data), data_chunk)]
    )
    count, activity = latent_activity(means, threshold)
    return int(count), np.asarray(activity)


active_units = model_active_units
"""The old name of `model_active_units` (kept importable)."""
