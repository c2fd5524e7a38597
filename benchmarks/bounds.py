"""Tighter bounds and their trade-off (Rainforth et al. 2018), and RWS / TVO on MNIST.

    python -m benchmarks bounds [--quick] [--out DIR] [--mnist-epochs E] [--mnist-train N]

Part 1, signal-to-noise ratios on Rainforth et al.'s Gaussian model (p(z) = N(mu, I),
p(x | z) = N(z, I), q(z | x) = N(A x + b, 2/3 I), D = 20, at a 0.1-perturbation of the
optimum): the SNR |E g| / sd(g) of the generative gradient (d/dmu) and of the inference
gradient (d/db), averaged over the 20 dimensions, against K, with log-log slopes fitted by
weighted least squares (standard errors by bootstrap over gradient draws) printed beside the
theory's +1/2 and -1/2; and, at a fixed budget M * K = 64, how MIWAE and PIWAE trade the
two off.

Part 2, MNIST (CPU-sized: a subset of training images, a few epochs, stated in the
settings): VAE, IWAE, PIWAE, MIWAE, CIWAE, RWS and TVO trained with the same architecture,
steps and sample budget, compared by the test log-likelihood (IS) and the test ELBO, with
Rainforth et al.'s full-budget figures beside.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from benchmarks import common

NAME = "bounds"

# Rainforth et al. (2018), Table 1 (MNIST, log p-hat(x) with their full training budget).
PAPER_LOG_PX = {
    "IWAE": -84.52,
    "PIWAE": -84.46,
    "MIWAE": -84.97,
    "CIWAE": -85.24,
    "VAE": -86.21,
}


def snr_draws(fn, k: int, n: int, seed: int = 0):
    """[n, 20] gradient draws of d/dmu and d/db on Rainforth et al.'s model."""
    import distrax
    import jax
    import jax.numpy as jnp

    d = 20
    kmu, kx, kp = jax.random.split(jax.random.key(42), 3)
    mu = jax.random.normal(kmu, (d,))
    x = mu + jnp.sqrt(2.0) * jax.random.normal(kx, (d,))
    pert = 0.1 * jax.random.normal(kp, (2, d))
    a, b = 0.5 + pert[0], mu / 2 + pert[1]
    scale = jnp.sqrt(2.0 / 3.0) * jnp.ones(d)

    def grads(key):
        def objective(mu_, b_):
            def lj(z):
                return jnp.sum(-0.5 * (z - mu_) ** 2 - 0.5 * (x - z) ** 2 - jnp.log(2 * jnp.pi), -1)

            q = distrax.MultivariateNormalDiag((a * x + b_)[None], scale[None])
            return fn(key, lj, q, k).sum()

        return jax.grad(objective, (0, 1))(mu, b)

    gm, gb = jax.jit(jax.vmap(grads))(jax.random.split(jax.random.key(seed), n))
    return np.asarray(gm, np.float64), np.asarray(gb, np.float64)


def _snr(g: np.ndarray, boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """Mean over dimensions of |E g| / sd(g), and its bootstrap standard error.

    |E g| is estimated without the upward bias of |mean|: sqrt(max(mean^2 - s^2 / n, 0))
    (mean^2 overestimates (E g)^2 by var / n), so that SNRs near the noise floor of n draws
    do not flatten the fitted slopes.
    """
    n = g.shape[0]

    def stat(s):
        var = s.var(0, ddof=1)
        signal = np.sqrt(np.maximum(s.mean(0) ** 2 - var / n, 0.0))
        return float(np.mean(signal / np.sqrt(var)))

    rng = np.random.default_rng(seed)
    reps = [stat(g[rng.integers(0, n, n)]) for _ in range(boot)]
    return stat(g), float(np.std(reps, ddof=1))


def _slope(ks, snrs, ses) -> tuple[float, float]:
    """Weighted least-squares slope of log SNR on log K, with its standard error."""
    x = np.log(np.asarray(ks, float))
    y = np.log(np.asarray(snrs, float))
    w = (np.asarray(snrs, float) / np.maximum(np.asarray(ses, float), 1e-12)) ** 2
    xm = np.sum(w * x) / np.sum(w)
    sxx = np.sum(w * (x - xm) ** 2)
    slope = np.sum(w * (x - xm) * y) / sxx
    return float(slope), float(1.0 / math.sqrt(sxx))


def snr_study(ks: list[int], n: int, bar, splits_of: tuple[int, ...] = (0, 8, 1)) -> dict[str, Any]:
    import vi_jax.estimators as vie
    from vi_jax.estimators import multisample as ms

    rows = []
    for name, fn in (("IWAE", vie.iwae_pathwise), ("IWAE-DReG", vie.iwae_dreg)):
        for k in ks:
            gm, gb = snr_draws(fn, k, n)
            (st, st_se), (sp, sp_se) = _snr(gm), _snr(gb)
            rows.append(
                {"estimator": name, "K": k, "theta_snr": st, "theta_se": st_se,
                 "phi_snr": sp, "phi_se": sp_se}
            )  # fmt: skip
            bar.update(1)
    slopes = []
    # DReG: Tucker et al. (2018) show its inference SNR does not vanish; no slope is claimed.
    for name, theory_theta, theory_phi in (("IWAE", 0.5, -0.5), ("IWAE-DReG", 0.5, None)):
        rs = [r for r in rows if r["estimator"] == name]
        ks_ = [r["K"] for r in rs]
        t, tse = _slope(ks_, [r["theta_snr"] for r in rs], [r["theta_se"] for r in rs])
        p, pse = _slope(ks_, [r["phi_snr"] for r in rs], [r["phi_se"] for r in rs])
        slopes.append(
            {"estimator": name, "theta_slope": t, "theta_slope_se": tse,
             "theta_theory": theory_theta, "phi_slope": p, "phi_slope_se": pse,
             "phi_theory": theory_phi}
        )  # fmt: skip
    budget = max(ks)
    # M = 0 stands for M = budget (one sample per group).
    ms_ = [budget if m == 0 else m for m in splits_of]
    splits = [(m, budget // m) for m in ms_ if budget % m == 0 and m <= budget]
    split_rows = []
    for m, k in dict.fromkeys(splits):
        for name, fn in (("MIWAE", ms.miwae_pathwise), ("PIWAE", ms.piwae_pathwise)):
            est = lambda kk, lj, q, kk_, fn=fn, m=m: fn(kk, lj, q, kk_, num_groups=m)  # noqa: E731
            gm, gb = snr_draws(est, k, n)
            (st, _), (sp, _) = _snr(gm), _snr(gb)
            split_rows.append({"objective": f"{name}({m},{k})", "M": m, "K": k,
                               "theta_snr": st, "phi_snr": sp})  # fmt: skip
            bar.update(1)
    return {"by_K": rows, "slopes": slopes, "budget_splits": split_rows, "draws": n}


def wake_phi_bias_study(ks: list[int], n: int, bar) -> list[dict[str, Any]]:
    """Bias of the wake-phi gradient against -grad KL(p(z|x) || q) in closed form, vs K.

    Linear-Gaussian model (4 data dims, 2 latents, 2 data points), mean-field q shifted
    0.3 from the posterior mean; n gradient draws per K. The bias of self-normalised
    importance sampling is O(1/K), so K * |bias| should level off.
    """
    import distrax
    import jax
    import jax.numpy as jnp

    import vi_jax.estimators as vie

    model = vie.make_linear_gaussian(jax.random.key(2), data_dim=4, latent_dim=2, noise_scale=0.8)
    x, _ = model.sample(jax.random.key(3), 2)
    mean, cov = model.posterior_params(x)
    phi = {"loc": mean + 0.3, "log_scale": jnp.log(jnp.sqrt(jnp.diag(cov)))[None].repeat(2, 0)}

    def q_of(p):
        return distrax.MultivariateNormalDiag(p["loc"], jnp.exp(p["log_scale"]))

    post = model.posterior(x)
    truth = jax.grad(lambda p: -post.kl_divergence(q_of(p)).sum())(phi)
    truth = np.concatenate([np.ravel(v) for v in jax.tree.leaves(truth)])
    rows = []
    for k in ks:

        def one(key, k=k):
            g = jax.grad(lambda p: vie.rws_wake_phi(key, model.log_joint_fn(x), q_of(p), k).sum())(
                phi
            )
            return jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(g)])

        g = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(k), n)), np.float64)
        diff = g.mean(0) - truth
        se = g.std(0, ddof=1) / math.sqrt(n)
        bias = float(np.linalg.norm(diff))
        rows.append(
            {"K": k, "bias_norm": bias, "bias_se": float(np.linalg.norm(se)),
             "K_times_bias": k * bias, "max_z": float(np.max(np.abs(diff) / se))}
        )  # fmt: skip
        bar.update(1)
    return rows


MNIST_RUNS = (
    # label, objective, estimator, K, M (same sample budget S per data point: K * M = S)
    ("VAE", "elbo", "pathwise", "S", 1),
    ("IWAE", "iwae", "pathwise", "S", 1),
    ("PIWAE", "piwae", "pathwise", "S/M", "M"),
    ("MIWAE", "miwae", "pathwise", "S/M", "M"),
    ("CIWAE", "ciwae", "pathwise", "S", 1),
    ("RWS", "rws", "wake", "S", 1),
    ("TVO", "tvo", "covariance", "S", 1),
)


def mnist_study(args, out, bar) -> list[dict[str, Any]]:
    from vi_jax import experiment

    s, m = args.budget, args.groups
    rows = []
    runs = [r for r in MNIST_RUNS if r[0] in args.runs] if args.runs else MNIST_RUNS
    for label, objective, estimator, k_rule, m_rule in runs:
        k = s if k_rule == "S" else s // m
        groups = m if m_rule == "M" else 1
        config = experiment.TrainConfig(
            dataset=args.dataset,
            epochs=args.mnist_epochs,
            train_examples=args.mnist_train,
            batch_size=args.batch_size,
            latent_dim=args.latent,
            hidden=tuple(args.hidden),
            activation="tanh",
            objective=objective,
            estimator=estimator,
            num_samples=k,
            num_groups=groups,
            eval_samples=args.eval_samples,
            eval_examples=args.eval_examples,
            eval_every=args.mnist_epochs,
            checkpoint_every=args.mnist_epochs,
            seed=0,
        )
        metrics = experiment.train(config, out / "runs" / label, progress=False)
        t = metrics["test"]
        rows.append(
            {
                "objective": label if groups == 1 else f"{label}({groups},{k})",
                "K": k,
                "M": groups,
                "test_log_px": t["log_likelihood"],
                "test_log_px_se": t["log_likelihood_stderr"],
                "test_elbo": t["elbo"],
                "paper_log_px": PAPER_LOG_PX.get(label),
                "train_s": metrics["wall_time_s"]["train"],
            }
        )
        bar.update(1)
    return rows


def plots(out, snr: dict[str, Any]) -> list[str]:
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, which, title in ((axes[0], "theta", "generative network"),
                             (axes[1], "phi", "inference network")):  # fmt: skip
        for name in ("IWAE", "IWAE-DReG"):
            rs = [r for r in snr["by_K"] if r["estimator"] == name]
            ks = [r["K"] for r in rs]
            yerr = [2 * r[f"{which}_se"] for r in rs]
            ax.errorbar(ks, [r[f"{which}_snr"] for r in rs], yerr=yerr, marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (importance samples)")
        ax.set_ylabel("SNR |E g| / sd(g), mean over dimensions")
        ax.set_title(f"SNR of the {title} gradient")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "snr_vs_k.png", dpi=120)
    return ["snr_vs_k.png"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks bounds", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--mnist-epochs", type=int, default=5)
    ap.add_argument("--mnist-train", type=int, default=10000, help="training images (0 = all)")
    ap.add_argument("--budget", type=int, default=8, help="samples per data point S = M * K")
    ap.add_argument("--groups", type=int, default=2, help="M for PIWAE and MIWAE")
    ap.add_argument("--snr-draws", type=int, default=2000)
    ap.add_argument("--runs", nargs="*", default=None, help="subset of the MNIST rows")
    args = ap.parse_args(argv)
    from tqdm.auto import tqdm

    if args.quick:
        ks, args.snr_draws = [1, 4], 200
        args.dataset, args.mnist_epochs, args.mnist_train = "synthetic", 1, 200
        args.budget, args.groups, args.batch_size = 4, 2, 50
        args.runs = args.runs or ["PIWAE"]
        args.latent, args.hidden, args.eval_samples, args.eval_examples = 2, (16,), 20, 20
    else:
        ks = [1, 4, 16, 64, 256]
        args.dataset, args.batch_size = "mnist", 100
        args.latent, args.hidden, args.eval_samples, args.eval_examples = 50, (200, 200), 1000, 500
    out = common.out_dir(NAME, args.out)
    with tqdm(total=2 * len(ks) + 6 + 7 + len(MNIST_RUNS), desc=NAME, disable=None) as bar:
        snr = snr_study(ks, args.snr_draws, bar, (1,) if args.quick else (0, 8, 1))
        bias_ks = [2, 8] if args.quick else [2, 5, 10, 30, 100, 300, 1000]
        wake_bias = wake_phi_bias_study(bias_ks, 100 if args.quick else 4000, bar)
        mnist = mnist_study(args, out, bar)
    files = plots(out, snr)
    tables = {
        "SNR against K (Rainforth et al.'s Gaussian model, D = 20)": common.markdown_table(
            snr["by_K"], ["estimator", "K", "theta_snr", "theta_se", "phi_snr", "phi_se"]
        ),
        "Log-log slopes of SNR in K, ours beside the theory": common.markdown_table(
            snr["slopes"],
            [
                "estimator",
                "theta_slope",
                "theta_slope_se",
                "theta_theory",
                "phi_slope",
                "phi_slope_se",
                "phi_theory",
            ],
        ),  # fmt: skip
        f"Fixed budget M * K = {max(ks)}": common.markdown_table(
            snr["budget_splits"], ["objective", "M", "K", "theta_snr", "phi_snr"]
        ),
        "Wake-phi bias against the exact forward-KL gradient (linear-Gaussian)": (
            common.markdown_table(wake_bias, ["K", "bias_norm", "bias_se", "K_times_bias", "max_z"])
        ),
        "MNIST (CPU-sized; paper: full budget, IWAE-64 etc.)": common.markdown_table(
            mnist,
            [
                "objective",
                "K",
                "M",
                "test_log_px",
                "test_log_px_se",
                "test_elbo",
                "paper_log_px",
                "train_s",
            ],
        ),  # fmt: skip
    }
    settings = {
        "quick": args.quick,
        "K": ks,
        "snr_draws": args.snr_draws,
        "mnist": {
            "dataset": args.dataset,
            "epochs": args.mnist_epochs,
            "train_examples": args.mnist_train,
            "budget_S": args.budget,
            "groups_M": args.groups,
            "architecture": f"784-{args.hidden}-{args.latent} tanh",
            "eval": f"IS K={args.eval_samples} on {args.eval_examples} test images",
        },
    }
    notes = [
        "SNR standard errors by bootstrap over gradient draws; slopes by weighted least squares.",
        "Paper figures (Rainforth et al. 2018, Table 1) use IWAE-64 / PIWAE(8,8) / MIWAE(8,8) and "
        "3280 passes; the MNIST rows here are a CPU-sized run: compare directions, not values.",
    ]
    results = {"snr": snr, "wake_phi_bias": wake_bias, "mnist": mnist}
    common.write_results(
        out, NAME, settings=settings, results=results, tables=tables, notes=notes, plots=files
    )
    for t, tab in tables.items():
        print(f"\n## {t}\n{tab}")
    print(f"results in {out}")
    return results
