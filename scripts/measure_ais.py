"""IS (K = 5000) vs AIS vs BDMC on a trained run: how far off is the standard IS estimate?

    python scripts/measure_ais.py /tmp/i14run --examples 50 --steps 10,100,1000 --chains 16

Prints one line per estimator with its mean over the same test images, its Monte Carlo
error and its wall time, then the BDMC bounds on data simulated from the model.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from vi_jax import experiment
from vi_jax.inference import evaluate_ais, evaluate_bdmc, evaluate_model
from vi_jax.models import merge_params, vae_view


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree_util.tree_leaves(out))
    return out, time.perf_counter() - t


def main() -> None:
    """Runs the comparison and prints it."""
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--examples", type=int, default=50)
    p.add_argument("--steps", default="10,100,1000")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--leapfrog", type=int, default=10)
    p.add_argument("--is-samples", type=int, default=5000)
    p.add_argument("--bdmc-examples", type=int, default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    config, x_test, graphdef, params, rest, epoch = experiment.load_run(a.run_dir)
    view = vae_view(graphdef, rest)
    x = jnp.asarray(x_test[: a.examples])
    steps = [int(s) for s in a.steps.split(",")]
    opts = dict(num_chains=a.chains, num_leapfrog=a.leapfrog, pilot_chains=4, data_chunk=25)
    rows = {}
    ev, t = _timed(
        lambda: evaluate_model(
            jax.random.key(1), params, view, x, num_samples=a.is_samples, sample_chunk=500
        )
    )
    rows["is"] = dict(
        mean=float(ev.log_likelihood.mean()),
        mc=float(np.sqrt(np.sum(ev.log_likelihood_mc_stderr**2)) / len(x)),
        s=t,
    )
    print(
        f"IS  K={a.is_samples}: {rows['is']['mean']:.3f} +- {rows['is']['mc']:.3f} (MC)  {t:.1f} s",
        flush=True,
    )
    for T in steps:
        r, t = _timed(
            lambda T=T: evaluate_ais(jax.random.key(2), params, view, x, num_steps=T, **opts)
        )
        diff = r.log_marginal - ev.log_likelihood
        rows[f"ais_{T}"] = dict(
            mean=float(r.log_marginal.mean()),
            mc=float(np.sqrt(np.sum(r.stderr**2)) / len(x)),
            ais_minus_is=float(diff.mean()),
            ais_minus_is_se=float(diff.std(ddof=1) / np.sqrt(len(x))),
            acceptance=float(r.acceptance_rate.mean()),
            s=t,
        )
        print(
            f"AIS T={T} C={a.chains}: {rows[f'ais_{T}']['mean']:.3f} +- "
            f"{rows[f'ais_{T}']['mc']:.3f}"
            f" (MC)  AIS-IS {diff.mean():.3f} +- {rows[f'ais_{T}']['ais_minus_is_se']:.3f}"
            f"  acc {r.acceptance_rate.mean():.2f}  {t:.1f} s",
            flush=True,
        )
    vae = merge_params(graphdef, params, rest)
    nb = a.bdmc_examples or a.examples
    zs, xs = vae.simulate(jax.random.key(7), nb)
    xs = xs.astype(zs.dtype)
    ev_s, t = _timed(
        lambda: evaluate_model(
            jax.random.key(3), params, view, xs, num_samples=a.is_samples, sample_chunk=500
        )
    )
    rows["sim_is"] = dict(mean=float(ev_s.log_likelihood.mean()), s=t)
    print(
        f"simulated data, IS K={a.is_samples}: {ev_s.log_likelihood.mean():.3f}  {t:.1f} s",
        flush=True,
    )
    for T in steps:
        r, t = _timed(
            lambda T=T: evaluate_bdmc(jax.random.key(4), params, view, xs, zs, num_steps=T, **opts)
        )
        rows[f"bdmc_{T}"] = dict(
            lower=float(r.lower.log_marginal.mean()),
            upper=float(r.upper.log_marginal.mean()),
            gap=float(r.gap.mean()),
            gap_se=float(r.gap.std(ddof=1) / np.sqrt(nb)),
            s=t,
        )
        print(
            f"BDMC T={T}: lower {r.lower.log_marginal.mean():.3f} upper "
            f"{r.upper.log_marginal.mean():.3f} gap {r.gap.mean():.3f} +- "
            f"{rows[f'bdmc_{T}']['gap_se']:.3f}  (IS - lower "
            f"{(ev_s.log_likelihood - r.lower.log_marginal).mean():.3f})  {t:.1f} s",
            flush=True,
        )
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"epoch": epoch, "examples": a.examples, **rows}, f, indent=2)


if __name__ == "__main__":
    main()
