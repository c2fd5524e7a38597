"""Tractability vs flexibility: Gaussian and flow families on 2-D targets with known log Z.

`python -m benchmarks families [--quick] [--out DIR]`

Targets (unnormalised, 2-D): a banana (sheared Gaussian), a two-component mixture with
well-separated modes and Neal's funnel; log Z by dense trapezoidal quadrature (checked
against the closed form). Every family (diag, fullrank, lowrank, iaf, realnvp, spline)
is fitted by the same budget of Adam steps on the K-sample pathwise ELBO; then
KL(q || p) = log Z - ELBO with the Monte Carlo standard error of the ELBO. Pictures:
q's density over the target's contours. The MNIST half of the issue (encoders of each
family, test log-likelihood and gaps) is `vi-jax train --posterior ...` + `vi-jax gaps`,
see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import common
from vi_jax.estimators.gradients import elbo_pathwise
from vi_jax.families import make_family

NAME = "families"
FAMILY_NAMES = ("diag", "fullrank", "lowrank", "iaf", "realnvp", "spline")


def _norm_logpdf(x: Any, scale: Any) -> Any:
    return -0.5 * (x / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def banana(z: Any) -> Any:
    """z1 ~ N(0, 1.5^2), z2 | z1 ~ N(0.4 (z1^2 - 2.25), 0.5^2), times e^2 (log Z = 2)."""
    z1, z2 = z[..., 0], z[..., 1]
    return 2.0 + _norm_logpdf(z1, 1.5) + _norm_logpdf(z2 - 0.4 * (z1**2 - 2.25), 0.5)


def mixture(z: Any) -> Any:
    """0.5 N((-2.5, 0), 0.6^2 I) + 0.5 N((2.5, 0), 0.6^2 I) (log Z = 0)."""
    a = _norm_logpdf(z[..., 0] + 2.5, 0.6) + _norm_logpdf(z[..., 1], 0.6)
    b = _norm_logpdf(z[..., 0] - 2.5, 0.6) + _norm_logpdf(z[..., 1], 0.6)
    return jnp.logaddexp(a, b) + math.log(0.5)


def funnel(z: Any) -> Any:
    """Neal's funnel in 2-D: v ~ N(0, 1.5^2), x | v ~ N(0, exp(v / 2)^2) (log Z = 0)."""
    v, x = z[..., 0], z[..., 1]
    return _norm_logpdf(v, 1.5) + _norm_logpdf(x, jnp.exp(v / 2))


TARGETS = {
    "banana": (banana, 2.0, (-6.0, 6.0, -6.0, 14.0)),
    "mixture": (mixture, 0.0, (-6.0, 6.0, -4.0, 4.0)),
    "funnel": (funnel, 0.0, (-7.0, 7.0, -30.0, 30.0)),
}


def log_z_quadrature(log_p: Any, box: tuple[float, ...], n: int) -> float:
    """Trapezoidal log Z on an n x n grid over `box` (float64 numpy, by rows)."""
    xs, ys = np.linspace(box[0], box[1], n), np.linspace(box[2], box[3], 4 * n)
    f = jax.jit(lambda z: log_p(z))
    rows = []
    for x in np.array_split(xs, 8):
        zz = np.stack(np.meshgrid(x, ys, indexing="ij"), -1)
        rows.append(np.asarray(f(jnp.asarray(zz, jnp.float32)), np.float64))
    lp = np.concatenate(rows, 0)
    m = lp.max()
    mass = np.trapezoid(np.trapezoid(np.exp(lp - m), ys, axis=1), xs)
    return float(m + np.log(mass))


def fit(family_name: str, log_p: Any, steps: int, k: int, lr: float, seed: int, eval_k: int):
    """Fits one family by `steps` Adam steps on the K-sample pathwise ELBO; returns stats."""
    fam = make_family(family_name, 2, flow_steps=4, flow_hidden=32, rank=1, rngs=seed)
    graphdef, state = nnx.split(fam)
    params = fam.init_params(jnp.zeros((1, 2)), jnp.ones((1, 2)))
    opt = optax.adam(lr)
    log_joint = lambda z: log_p(z)  # noqa: E731  z [K, 1, 2] -> [K, 1]

    def q_of(theta):
        st, p = theta
        return nnx.merge(graphdef, st)(p)

    @jax.jit
    def run(theta, key):
        def body(carry, kk):
            th, s = carry
            loss, g = jax.value_and_grad(
                lambda t: -jnp.sum(elbo_pathwise(kk, log_joint, q_of(t), k))
            )(th)
            u, s = opt.update(g, s, th)
            return (optax.apply_updates(th, u), s), loss

        (th, _), losses = jax.lax.scan(body, (theta, opt.init(theta)), jax.random.split(key, steps))
        return th, losses

    t0 = time.perf_counter()
    theta, losses = run((state, params), jax.random.key(seed))
    jax.block_until_ready(theta)
    fit_s = time.perf_counter() - t0
    q = q_of(theta)

    @jax.jit
    def sample_time(key):
        return q.sample_and_log_prob(seed=key, sample_shape=(eval_k,))

    z, log_q = sample_time(jax.random.key(seed + 1))
    t0 = time.perf_counter()
    jax.block_until_ready(sample_time(jax.random.key(seed + 2)))
    per_sample_us = 1e6 * (time.perf_counter() - t0) / eval_k
    log_w = np.asarray(log_p(z)[:, 0] - log_q[:, 0], np.float64)
    return {
        "elbo": float(log_w.mean()),
        "elbo_stderr": float(log_w.std(ddof=1) / math.sqrt(eval_k)),
        "fit_s": fit_s,
        "us_per_sample": per_sample_us,
        "final_loss": float(np.mean(np.asarray(losses)[-max(1, steps // 10) :])),
    }, q


def plots(out: Any, qs: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(qs.values())))
    fig, axes = plt.subplots(
        len(qs), len(names), figsize=(3 * len(names), 3 * len(qs)), squeeze=False
    )
    for r, tname in enumerate(qs):
        log_p, _, box = TARGETS[tname]
        xs, ys = np.linspace(box[0], box[1], 120), np.linspace(box[2], box[3], 120)
        zz = jnp.asarray(np.stack(np.meshgrid(xs, ys, indexing="ij"), -1), jnp.float32)
        p = np.exp(np.asarray(log_p(zz)))
        for c, fname in enumerate(names):
            ax = axes[r, c]
            dens = np.exp(np.asarray(jax.jit(qs[tname][fname].log_prob)(zz.reshape(-1, 1, 2))))
            ax.contourf(xs, ys, dens.reshape(120, 120).T, levels=20, cmap="Blues")
            ax.contour(xs, ys, p.T, levels=6, colors="k", linewidths=0.6)
            ax.set_title(f"{tname}: {fname}", fontsize=9)
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
    fig.suptitle("q density (filled) over the target p (black contours)")
    fig.tight_layout()
    fig.savefig(out / "families_2d.png", dpi=80)
    plt.close(fig)
    return ["families_2d.png"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks families", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    steps, k, eval_k, grid = (20, 2, 500, 100) if args.quick else (3000, 16, 20000, 1200)
    targets = ("banana",) if args.quick else tuple(TARGETS)
    families = ("diag", "iaf", "realnvp") if args.quick else FAMILY_NAMES
    lr = 5e-3
    out = common.out_dir(NAME, args.out)
    results: dict[str, Any] = {}
    qs: dict[str, dict[str, Any]] = {}
    rows = []
    for tname in targets:
        log_p, exact, box = TARGETS[tname]
        log_z = log_z_quadrature(log_p, box, grid)
        results[tname] = {"log_z_quadrature": log_z, "log_z_exact": exact, "families": {}}
        qs[tname] = {}
        for fname in families:
            stats, q = fit(fname, log_p, steps, k, lr, 0, eval_k)
            stats["kl"] = log_z - stats["elbo"]
            results[tname]["families"][fname] = stats
            qs[tname][fname] = q
        diag_kl = results[tname]["families"]["diag"]["kl"]
        for fname, st in results[tname]["families"].items():
            st["kl_over_diag"] = st["kl"] / diag_kl if diag_kl > 0 else math.nan
            rows.append(
                {
                    "target": tname,
                    "family": fname,
                    "log Z": f"{log_z:.4f}",
                    "ELBO": f"{st['elbo']:.4f} ± {st['elbo_stderr']:.4f}",
                    "KL(q||p)": f"{st['kl']:.4f} ± {st['elbo_stderr']:.4f}",
                    "KL / KL(diag)": f"{st['kl_over_diag']:.3f}",
                    "us/sample": f"{st['us_per_sample']:.2f}",
                    "fit s": f"{st['fit_s']:.1f}",
                }
            )
    files = plots(out, qs)
    cols = ["target", "family", "log Z", "ELBO", "KL(q||p)", "KL / KL(diag)", "us/sample", "fit s"]
    tables = {"2-D targets, same budget per family": common.markdown_table(rows, cols)}
    settings = {
        "quick": args.quick,
        "steps": steps,
        "K": k,
        "eval_K": eval_k,
        "lr": lr,
        "grid": grid,
        "flow_steps": 4,
        "flow_hidden": 32,
        "lowrank_rank": 1,
    }
    notes = [
        "KL = log Z (quadrature) - ELBO; its +- is the Monte Carlo stderr of the ELBO "
        f"({eval_k} samples); log Z by quadrature agrees with the closed form to the digits shown.",
        "us/sample: one jitted sample_and_log_prob call of eval_K samples, wall time / eval_K.",
    ]
    common.publish(
        out, NAME, settings=settings, results=results, tables=tables, notes=notes, plots=files
    )
    return results


if __name__ == "__main__":
    main()
