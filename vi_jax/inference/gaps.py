"""Inference gaps (Cremer, Li & Duvenaud 2018): approximation vs amortisation.

For each data point x,

    log p(x) - ELBO(q_enc) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_enc)]
                             approximation gap      amortisation gap

with q_enc the encoder's q(z | x) and q* the best Gaussian of the chosen family for
that x alone, found by per-datapoint SVI (`fit_local`) started from q_enc. With a
`vi_jax.families.Family` as `family` (e.g. the encoder's own flow family), q* is a
per-datapoint member of that family (a flow gets its own weights per data point),
warm-started from q_enc's params and weights: the approximation gap of that family. log p(x) is
an importance-sampling estimate with q* as proposal and many samples (chunked).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vi_jax._validation import check_callable, check_finite, check_positive_int
from vi_jax.estimators import bounds
from vi_jax.estimators.gradients import elbo_pathwise
from vi_jax.estimators.importance import importance_log_marginal
from vi_jax.families import Family, FlowDistribution
from vi_jax.inference import svi
from vi_jax.types import Array, ModelView


def inference_gaps(
    key: Array,
    params: Any,
    model_fn: Callable[[Any, Array], ModelView],
    data: Array,
    *,
    num_is_samples: int = 5000,
    svi_steps: int = 500,
    family: str | Family = "meanfield",
    learning_rate: float = 1e-2,
    svi_num_samples: int = 1,
    estimator: Callable[..., Array] = elbo_pathwise,
    num_elbo_samples: int = 1000,
    chunk_size: int = 500,
    data_chunk: int = 256,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-example log p(x), ELBO(q*), ELBO(q_enc) and the two gaps.

    Args:
      key: PRNG key.
      params: model parameters passed to `model_fn`.
      model_fn: `(params, x [B, data]) -> ModelView`; its posterior has batch `[B]`,
        event `[latent]` (for a string `family`, q* starts from its loc and marginal
        scales: a flow's affine part, a Gaussian's mean and standard deviations).
      data: `[N, *data_shape]`.
      num_is_samples: K for the importance-sampled log p(x) (static, >= 1).
      svi_steps: Adam steps of per-datapoint SVI for q* (>= 1).
      family: "meanfield" (q* in the encoder's family: the Cremer et al. split),
        "fullrank", or a `vi_jax.families.Family` (for a flow or other family encoder,
        pass the encoder's family, e.g. `vae.encoder.family`: q* then lives in it).
      learning_rate: Adam step size for SVI.
      svi_num_samples: K per SVI step.
      estimator: surrogate estimator for SVI.
      num_elbo_samples: samples for each ELBO estimate (its MC stderr is returned).
      chunk_size: IS samples per chunk (memory bound).
      data_chunk: examples per compiled call.
      progress: show a tqdm bar over the chunks of examples.

    Returns:
      `(per_example, summary)`: `per_example` maps "log_px", "elbo_opt", "elbo_enc",
      "approximation_gap", "amortisation_gap" and the Monte Carlo standard errors
      "log_px_stderr", "elbo_opt_stderr", "elbo_enc_stderr" to `[N]` arrays;
      `summary` maps each quantity to its mean over examples and "<name>_stderr"
      to the standard error of that mean, plus "num_examples".
    """
    check_callable(model_fn, "model_fn")
    for name, value in (
        ("num_is_samples", num_is_samples),
        ("svi_steps", svi_steps),
        ("svi_num_samples", svi_num_samples),
        ("num_elbo_samples", num_elbo_samples),
        ("chunk_size", chunk_size),
        ("data_chunk", data_chunk),
    ):
        check_positive_int(value, name)
    svi.check_family(family)
    data = jnp.asarray(data)
    if data.ndim < 2:
        raise ValueError(f"`data` must have shape [N, *data_shape], got {data.shape}.")
    check_finite(data, "data")
    chunk_size = min(chunk_size, num_is_samples)

    # params are an argument, not a closure: large weights are not baked into the program.
    @jax.jit
    def run(p: Any, k: Array, x: Array) -> dict[str, Array]:
        view = model_fn(p, x)
        q_enc = view.posterior
        if isinstance(family, Family):
            init = svi.init_from_q(q_enc, family)
        else:
            loc, scale = _loc_scale(q_enc)
            init = svi.init_params(loc, family, scale)
        k_fit, k_enc, k_opt, k_is = jax.random.split(k, 4)
        _, q_opt, _ = svi.fit_local(
            k_fit,
            view.log_joint,
            init,
            family=family,
            optimizer=optax.adam(learning_rate),
            estimator=estimator,
            num_samples=svi_num_samples,
            num_steps=svi_steps,
        )
        _, lw_enc = bounds.log_weights(k_enc, view.log_joint, q_enc, num_elbo_samples)
        _, lw_opt = bounds.log_weights(k_opt, view.log_joint, q_opt, num_elbo_samples)
        est = importance_log_marginal(
            k_is, view.log_joint, q_opt, num_is_samples, chunk_size=chunk_size
        )
        log_px = est.log_marginal
        stderr_fallback = jnp.full(log_px.shape, jnp.inf)
        root = math.sqrt(num_elbo_samples)
        return {
            "log_px": log_px,
            # delta method: stderr of log p^ ~ relative stderr of p^
            "log_px_stderr": jnp.exp(est.log_stderr - log_px),
            "elbo_opt": lw_opt.mean(0),
            "elbo_enc": lw_enc.mean(0),
            "elbo_opt_stderr": lw_opt.std(0, ddof=1) / root if root > 1 else stderr_fallback,
            "elbo_enc_stderr": lw_enc.std(0, ddof=1) / root if root > 1 else stderr_fallback,
        }

    parts: list[dict[str, np.ndarray]] = []
    keys = jax.random.split(key, math.ceil(data.shape[0] / data_chunk))
    chunks = enumerate(keys)
    if progress:
        from vi_jax._progress import tqdm

        chunks = tqdm(chunks, total=len(keys), desc="gaps", unit="chunk", leave=False)
    for i, k in chunks:
        out = run(params, k, data[i * data_chunk : (i + 1) * data_chunk])
        parts.append({n: np.asarray(v) for n, v in out.items()})
    per_example = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
    per_example["approximation_gap"] = per_example["log_px"] - per_example["elbo_opt"]
    per_example["amortisation_gap"] = per_example["elbo_opt"] - per_example["elbo_enc"]
    n = per_example["log_px"].shape[0]
    summary: dict[str, float] = {"num_examples": float(n)}
    for name in ("log_px", "elbo_opt", "elbo_enc", "approximation_gap", "amortisation_gap"):
        values = per_example[name]
        summary[name] = float(values.mean())
        summary[f"{name}_stderr"] = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return per_example, summary


def _loc_scale(q: Any) -> tuple[Array, Array]:
    """A Gaussian warm start `(loc, scale)` `[B, D]` from any encoder q (held fixed).

    A diagonal Gaussian gives its own; a flow (`loc + scale * T(eps)`) its affine part;
    any other q (full-covariance, low-rank) its mean and marginal standard deviations.
    """
    if hasattr(q, "scale_diag"):
        loc, scale = q.loc, jnp.broadcast_to(q.scale_diag, q.loc.shape)
    elif isinstance(q, FlowDistribution):
        loc, scale = q.loc, q.scale
    else:
        loc = q.mean()
        scale = jnp.sqrt(jnp.diagonal(q.covariance(), axis1=-2, axis2=-1))
    return jax.lax.stop_gradient(loc), jax.lax.stop_gradient(scale)


def gaps_table(summary: dict[str, float]) -> str:
    """A markdown table of an `inference_gaps` summary (mean ± stderr over examples)."""
    rows = [
        ("log p(x) (IS)", "log_px"),
        ("ELBO(q*)", "elbo_opt"),
        ("ELBO(q_enc)", "elbo_enc"),
        ("approximation gap", "approximation_gap"),
        ("amortisation gap", "amortisation_gap"),
    ]
    missing = [key for _, key in rows if key not in summary]
    if missing:
        raise ValueError(f"`summary` lacks {missing}; pass the summary from `inference_gaps`.")
    lines = ["| quantity | mean (nats) | stderr |", "|---|---:|---:|"]
    for label, key in rows:
        lines.append(
            f"| {label} | {summary[key]:.4f} | {summary.get(key + '_stderr', math.nan):.4f} |"
        )
    if "num_examples" in summary:
        lines.append(f"| examples | {int(summary['num_examples'])} | |")
    return "\n".join(lines)
