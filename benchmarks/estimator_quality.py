"""Bias, spread and gradient SNR of log-marginal and gradient estimators as K grows.

Log-marginal estimators (one data point, R independent repetitions per K):
- LinearGaussian (exact log p(x)): IS with the prior, IS with the exact posterior
  (zero variance, a sanity check), IWAE bound and K-sample ELBO with the reverse-KL
  mean-field Gaussian q (IWAE = IS with that q).
- BinaryLatentGaussian with D binary latents (exact log p(x) by enumeration): uniform
  MC over {0,1}^D, IS with the prior, IWAE bound and ELBO with the mean-field Bernoulli
  q of the exact posterior marginals.
Gradient estimators (`vi_jax.estimators.gradients.ESTIMATORS` plus the score function
with a constant baseline) on a 1-latent LinearGaussian, so that a diagonal Gaussian q
can equal the exact posterior: variance (trace) and SNR = |E g| / std g (averaged over
parameter elements; Rainforth et al. 2018) of phi = (loc, log scale of q) and theta =
(W, b of the model), at a perturbed q as K grows and at the exact posterior.

    python -m benchmarks estimator_quality [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import numpy as np

from benchmarks import common

NAME = "estimator_quality"


def _stats(est: np.ndarray, truth: float) -> dict[str, float]:
    est = np.asarray(est, np.float64)
    return {"bias": float(est.mean() - truth), "std": float(est.std(ddof=1))}


def log_marginal_study(ks: list[int], reps: int, binary_latents: int, bar) -> dict[str, Any]:
    import distrax
    import jax
    import jax.numpy as jnp

    from vi_jax import estimators as E

    out: dict[str, Any] = {}
    # ---- LinearGaussian
    lg = E.make_linear_gaussian(jax.random.key(0), data_dim=5, latent_dim=2, noise_scale=0.5)
    x, _ = lg.sample(jax.random.key(1), 1)
    x = x[0]
    lj = lg.log_joint_fn(x)
    truth = float(lg.log_marginal(x))
    mean, cov = lg.posterior_params(x)
    mf = distrax.MultivariateNormalDiag(mean, 1.0 / jnp.sqrt(jnp.diag(jnp.linalg.inv(cov))))
    methods = {
        "IS, prior proposal": lambda k, K: (
            E.importance_log_marginal(k, lj, lg.prior(), K).log_marginal
        ),
        "IS, exact posterior": lambda k, K: (
            E.importance_log_marginal(k, lj, lg.posterior(x), K).log_marginal
        ),
        "IWAE bound, mean-field q": lambda k, K: E.iwae_bound(k, lj, mf, K),
        "ELBO (K samples), mean-field q": lambda k, K: E.elbo(k, lj, mf, K),
    }
    out["LinearGaussian"] = _run_methods(methods, ks, reps, truth, bar)
    out["LinearGaussian"]["truth"] = truth
    # ---- BinaryLatentGaussian (skipped when binary_latents == 0, as in --quick)
    d = binary_latents
    if d == 0:
        return out
    bl = E.make_binary_latent_gaussian(jax.random.key(2), data_dim=8, latent_dim=d, noise_scale=0.7)
    xb, _ = bl.sample(jax.random.key(3), 1)
    xb = xb[0]
    ljb = bl.log_joint_fn(xb)
    truth_b = float(E.enumerate_binary_log_marginal(ljb, d))
    marg = jnp.clip(E.enumerate_binary_posterior_marginals(ljb, d), 1e-4, 1 - 1e-4)
    qb = distrax.Independent(distrax.Bernoulli(probs=marg, dtype=xb.dtype), 1)
    support = E.binary_support(d)
    methods_b = {
        "uniform MC": lambda k, K: E.uniform_log_marginal(k, ljb, support, K).log_marginal,
        "IS, prior proposal": lambda k, K: (
            E.importance_log_marginal(k, ljb, bl.prior(), K).log_marginal
        ),
        "IWAE bound, mean-field q": lambda k, K: E.iwae_bound(k, ljb, qb, K),
        "ELBO (K samples), mean-field q": lambda k, K: E.elbo(k, ljb, qb, K),
    }
    out[f"BinaryLatentGaussian (D={d})"] = _run_methods(methods_b, ks, reps, truth_b, bar)
    out[f"BinaryLatentGaussian (D={d})"]["truth"] = truth_b
    return out


def _run_methods(methods, ks, reps, truth, bar) -> dict[str, Any]:
    import jax

    res: dict[str, Any] = {"methods": {}}
    for name, fn in methods.items():
        rows = []
        for K in ks:
            keys = jax.random.split(jax.random.key(K + 17), reps)
            est = np.asarray(jax.jit(jax.vmap(lambda k, K=K: fn(k, K)))(keys))
            rows.append({"K": K, **_stats(est, truth)})
            bar.update(1)
        res["methods"][name] = rows
    return res


def gradient_study(ks: list[int], reps: int, bar) -> dict[str, Any]:
    import distrax
    import jax
    import jax.numpy as jnp

    from vi_jax import estimators as E
    from vi_jax.estimators.gradients import ESTIMATORS

    lg = E.make_linear_gaussian(jax.random.key(4), data_dim=3, latent_dim=1, noise_scale=0.6)
    x, _ = lg.sample(jax.random.key(5), 1)
    x = x[0]
    mean, cov = lg.posterior_params(x)
    exact_phi = {"loc": mean, "log_scale": 0.5 * jnp.log(jnp.diag(cov))}
    perturbed_phi = {"loc": mean + 0.5, "log_scale": exact_phi["log_scale"] + 0.3}
    theta = {"weight": lg.weight, "bias": lg.bias}
    exact_elbo = float(lg.log_marginal(x))
    estimators = dict(ESTIMATORS)
    estimators["score_function+baseline"] = functools.partial(
        ESTIMATORS["score_function"], baseline=exact_elbo
    )

    def surrogate(est, K, key, theta, phi):
        model = lg._replace(weight=theta["weight"], bias=theta["bias"])
        q = distrax.MultivariateNormalDiag(phi["loc"], jnp.exp(phi["log_scale"]))
        return est(key, model.log_joint_fn(x), q, K)

    def summarize(grads) -> dict[str, float]:
        out = {}
        for part in ("theta", "phi"):
            g = np.concatenate(
                [np.asarray(v).reshape(reps, -1) for v in jax.tree.leaves(grads[part])], 1
            )
            m, s = g.mean(0), g.std(0, ddof=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = np.abs(m) / s
            out[f"{part}_var"] = float((s**2).sum())
            out[f"{part}_snr"] = float(np.mean(snr)) if np.all(np.isfinite(snr)) else None
        return out

    results: dict[str, Any] = {}
    for name, est in estimators.items():
        rows = []
        compiled = {}  # one program per K, shared by both places q is evaluated at
        for where, phi, kgrid in (
            ("perturbed q", perturbed_phi, ks),
            ("exact posterior", exact_phi, [ks[-1]]),
        ):
            for K in kgrid:
                if name in ("score_function_loo", "vimco") and K < 2:
                    continue
                if K not in compiled:
                    g_fn = jax.grad(
                        lambda th, ph, k, K=K, est=est: surrogate(est, K, k, th, ph),
                        argnums=(0, 1),
                    )
                    compiled[K] = jax.jit(jax.vmap(g_fn, in_axes=(None, None, 0)))
                keys = jax.random.split(jax.random.key(100 + K), reps)
                gt, gp = compiled[K](theta, phi, keys)
                rows.append({"where": where, "K": K, **summarize({"theta": gt, "phi": gp})})
            bar.update(1)
        results[name] = rows
    return results


def plots(out, lm: dict[str, Any], gr: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for prob, res in lm.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for name, rows in res["methods"].items():
            K = np.array([r["K"] for r in rows])
            axes[0].plot(K, [abs(r["bias"]) + 1e-12 for r in rows], "o-", label=name)
            axes[1].plot(K, [r["std"] + 1e-12 for r in rows], "o-", label=name)
        for ax, what in zip(axes, ("|bias| (nats)", "std (nats)"), strict=True):
            k0 = np.array([K.min(), K.max()], float)
            ax.plot(k0, 1.0 / np.sqrt(k0), "k--", lw=1, label="1/sqrt(K)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("K")
            ax.set_ylabel(what)
        axes[1].legend(fontsize=7)
        fig.suptitle(f"log p(x) estimators: {prob}")
        fig.tight_layout()
        fname = "logmarginal_" + prob.split()[0].lower() + ".png"
        fig.savefig(out / fname, dpi=90)
        plt.close(fig)
        files.append(fname)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in gr.items():
        rs = [r for r in rows if r["where"] == "perturbed q"]
        K = [r["K"] for r in rs]
        for ax, part in zip(axes, ("phi", "theta"), strict=True):
            ax.plot(
                K,
                [np.nan if r[f"{part}_snr"] is None else r[f"{part}_snr"] for r in rs],
                "o-",
                label=name,
            )
    for ax, part in zip(axes, ("phi (encoder/q)", "theta (model)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K")
        ax.set_ylabel(f"SNR of {part} gradient")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gradient_snr.png", dpi=90)
    plt.close(fig)
    files.append("gradient_snr.png")
    return files


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks estimator_quality", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from tqdm.auto import tqdm

    from vi_jax.estimators.gradients import ESTIMATORS

    if args.quick:
        ks, reps, d, gks, greps = [4], 32, 0, [4], 32
    else:
        ks, reps, d, gks, greps = (
            [1, 4, 16, 64, 256, 1024],
            1000,
            12,
            [1, 2, 4, 8, 16, 32, 64, 128],
            2000,
        )
    out = common.out_dir(NAME, args.out)
    total = (8 if d else 4) * len(ks) + len(ESTIMATORS) + 1
    with tqdm(total=total, desc=NAME, disable=None) as bar:
        lm = log_marginal_study(ks, reps, d, bar)
        gr = gradient_study(gks, greps, bar)
    files = plots(out, lm, gr)
    tables = {}
    for prob, res in lm.items():
        rows = []
        for name, rs in res["methods"].items():
            for r in rs:
                rows.append({"estimator": name, **r})
        tables[f"log p(x) estimators, {prob} (log p(x) = {res['truth']:.4f})"] = (
            common.markdown_table(rows, ["estimator", "K", "bias", "std"])
        )
    grows = [{"estimator": n, **r} for n, rs in gr.items() for r in rs]
    tables["Gradient estimators (1-latent LinearGaussian)"] = common.markdown_table(
        grows, ["estimator", "where", "K", "phi_var", "phi_snr", "theta_var", "theta_snr"]
    )
    settings = {
        "quick": args.quick,
        "K": ks,
        "reps": reps,
        "binary_latents": d,
        "gradient_K": gks,
        "gradient_reps": greps,
    }
    notes = [
        "SNR '-' means the gradient has zero spread (e.g. STL/DReG phi at the exact posterior)."
    ]
    results = {"log_marginal": lm, "gradients": gr}
    common.write_results(
        out, NAME, settings=settings, results=results, tables=tables, notes=notes, plots=files
    )
    for t, tab in tables.items():
        print(f"\n## {t}\n{tab}")
    print(f"results in {out}")
    return results


if __name__ == "__main__":
    main()
