"""Tractability vs flexibility: Gaussian and flow families on 2-D targets with known log Z.

`python -m benchmarks families [--quick] [--out DIR]`

Targets (unnormalised, 2-D): a banana (sheared Gaussian), a two-component mixture with
well-separated modes and Neal's funnel; log Z by dense trapezoidal quadrature (checked
against the closed form). Every family (diag, fullrank, lowrank, iaf, realnvp, spline)
is fitted by the same budget of Adam steps on the K-sample pathwise ELBO; then
KL(q || p) = log Z - ELBO with the Monte Carlo standard error of the ELBO. Pictures:
q's density over the target's contours.

MNIST leg (`--legs mnist`): VAEs with diag, full-covariance and IAF encoders, the same
architecture, data and epochs (`experiment.train`), then on the same binarised test
images: log p(x) by importance sampling (K = 5000) and the ELBO, each with its standard
error over images, the flow's and full-covariance's ELBO gain over diag with the paired
standard error (per-image differences over the same images), and the inference gaps
(`experiment.gaps`: q* in each encoder's own family). `--quick` runs it on the small
synthetic data set.
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
from vi_jax import experiment
from vi_jax.estimators.gradients import elbo_pathwise
from vi_jax.families import make_family
from vi_jax.inference.evaluate import evaluate_model
from vi_jax.models.view import vae_view

NAME = "families"
FAMILY_NAMES = ("diag", "fullrank", "lowrank", "iaf", "realnvp", "spline")
MNIST_FAMILIES = ("diag", "fullrank", "iaf")
# The MNIST leg's sizes: full run (CPU minutes) and --quick (synthetic data, seconds).
MNIST_FULL = dict(
    dataset="mnist",
    train_examples=10_000,
    epochs=10,
    batch_size=100,
    latent_dim=16,
    hidden=(256,),
    flow_steps=2,
    flow_hidden=64,
    learning_rate=1e-3,
    test_examples=500,
    is_samples=5000,
    elbo_samples=100,
    gap_examples=100,
    gap_is_samples=2000,
    gap_svi_steps=1000,
)
MNIST_QUICK = dict(
    MNIST_FULL,
    dataset="synthetic",
    train_examples=0,
    epochs=1,
    latent_dim=2,
    hidden=(16,),
    flow_steps=1,
    flow_hidden=8,
    test_examples=20,
    is_samples=50,
    elbo_samples=4,
    gap_examples=4,
    gap_is_samples=20,
    gap_svi_steps=5,
)


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


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b over the same images and its standard error (paired)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def mnist_leg(out: Any, sizes: dict[str, Any], families: tuple[str, ...]) -> dict[str, Any]:
    """Trains one VAE per encoder family and measures log p(x), the ELBO and the gaps."""
    results: dict[str, Any] = {"families": {}}
    per_image: dict[str, dict[str, np.ndarray]] = {}
    for fam in families:
        config = experiment.TrainConfig(
            dataset=sizes["dataset"],
            train_examples=sizes["train_examples"],
            epochs=sizes["epochs"],
            batch_size=sizes["batch_size"],
            latent_dim=sizes["latent_dim"],
            hidden=tuple(sizes["hidden"]),
            posterior=fam,
            flow_steps=sizes["flow_steps"],
            flow_hidden=sizes["flow_hidden"],
            learning_rate=sizes["learning_rate"],
            # train's own final evaluation is replaced by the one below (per image).
            eval_samples=1,
            eval_examples=1,
            checkpoint_every=sizes["epochs"],
            seed=0,
        )
        run_dir = out / f"mnist-{fam}"
        t0 = time.perf_counter()
        metrics = experiment.train(config, run_dir, progress=False)
        train_s = time.perf_counter() - t0
        config, x_test, graphdef, params, rest, _ = experiment.load_run(run_dir)
        t0 = time.perf_counter()
        # One key for every family: the same test images and the same IS / ELBO draws' keys.
        ev = evaluate_model(
            jax.random.key(1),
            params,
            vae_view(graphdef, rest),
            x_test[: sizes["test_examples"]],
            num_samples=sizes["is_samples"],
            sample_chunk=min(500, sizes["is_samples"]),
            data_chunk=50,
            elbo_samples=sizes["elbo_samples"],
        )
        eval_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        gap, _ = experiment.gaps(
            run_dir,
            num_examples=sizes["gap_examples"],
            num_is_samples=sizes["gap_is_samples"],
            svi_steps=sizes["gap_svi_steps"],
            progress=False,
        )
        gaps_s = time.perf_counter() - t0
        per_image[fam] = {"ll": np.asarray(ev.log_likelihood), "elbo": np.asarray(ev.elbo)}
        results["families"][fam] = {
            "test": ev.summary(),
            "gaps": gap,
            "train_final_bound": metrics["train"]["final_bound"],
            "epoch_s": metrics["train"]["epoch_time_s_median"],
            "train_s": train_s,
            "eval_s": eval_s,
            "gaps_s": gaps_s,
        }
    if "diag" in per_image:
        for fam in per_image:
            if fam == "diag":
                continue
            d_elbo, se_elbo = _paired(per_image[fam]["elbo"], per_image["diag"]["elbo"])
            d_ll, se_ll = _paired(per_image[fam]["ll"], per_image["diag"]["ll"])
            results["families"][fam]["vs_diag"] = {
                "elbo_gain": d_elbo,
                "elbo_gain_stderr": se_elbo,
                "elbo_gain_in_stderrs": d_elbo / se_elbo,
                "ll_gain": d_ll,
                "ll_gain_stderr": se_ll,
            }
    return results


def mnist_tables(res: dict[str, Any], sizes: dict[str, Any]) -> dict[str, str]:
    rows, gap_rows = [], []
    for fam, r in res["families"].items():
        t, g, v = r["test"], r["gaps"], r.get("vs_diag")
        rows.append(
            {
                "encoder": fam,
                f"log p(x) (IS, K={sizes['is_samples']})": f"{t['log_likelihood']:.2f} ± "
                f"{t['log_likelihood_stderr']:.2f}",
                "test ELBO": f"{t['elbo']:.2f} ± {t['elbo_stderr']:.2f}",
                "ELBO - ELBO(diag), paired": "-"
                if v is None
                else f"{v['elbo_gain']:+.3f} ± {v['elbo_gain_stderr']:.3f} "
                f"({v['elbo_gain_in_stderrs']:.1f} s.e.)",
                "log p(x) - diag's, paired": "-"
                if v is None
                else f"{v['ll_gain']:+.3f} ± {v['ll_gain_stderr']:.3f}",
                "s/epoch": f"{r['epoch_s']:.1f}",
            }
        )
        gap_rows.append(
            {
                "encoder": fam,
                "q* family": g["family"],
                "log p(x)": f"{g['log_px']:.2f}",
                "ELBO(q*)": f"{g['elbo_opt']:.2f}",
                "ELBO(q_enc)": f"{g['elbo_enc']:.2f}",
                "approximation gap": f"{g['approximation_gap']:.2f} ± "
                f"{g['approximation_gap_stderr']:.2f}",
                "amortisation gap": f"{g['amortisation_gap']:.2f} ± "
                f"{g['amortisation_gap_stderr']:.2f}",
            }
        )
    cols = list(rows[0])
    gcols = list(gap_rows[0])
    n, ng = sizes["test_examples"], sizes["gap_examples"]
    return {
        f"MNIST: test log-likelihood and ELBO ({n} test images)": common.markdown_table(rows, cols),
        f"MNIST: inference gaps (first {ng} test images)": common.markdown_table(gap_rows, gcols),
    }


def two_d_leg(out: Any, quick: bool) -> tuple[dict[str, Any], dict[str, str], dict, list, list]:
    """The 2-D targets: (results, tables, settings, notes, picture files)."""
    steps, k, eval_k, grid = (20, 2, 500, 100) if quick else (3000, 16, 20000, 1200)
    targets = ("banana",) if quick else tuple(TARGETS)
    families = ("diag", "iaf", "realnvp") if quick else FAMILY_NAMES
    lr = 5e-3
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
    return results, tables, settings, notes, files


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks families", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--legs", default="2d,mnist", help="comma-separated legs to run: 2d, mnist (default both)"
    )
    args = ap.parse_args(argv)
    legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    if not legs or any(leg not in ("2d", "mnist") for leg in legs):
        ap.error(f"--legs must be a comma-separated subset of 2d,mnist, got {args.legs!r}")
    out = common.out_dir(NAME, args.out)
    results: dict[str, Any] = {}
    tables: dict[str, str] = {}
    settings: dict[str, Any] = {"quick": args.quick, "legs": legs}
    notes: list[str] = []
    files: list[str] = []
    if "2d" in legs:
        res, tab, st, nts, fls = two_d_leg(out, args.quick)
        results.update(res)
        tables.update(tab)
        settings["2d"] = st
        notes += nts
        files += fls
    if "mnist" in legs:
        sizes = MNIST_QUICK if args.quick else MNIST_FULL
        families = ("diag", "iaf") if args.quick else MNIST_FAMILIES
        results["mnist"] = mnist_leg(out, sizes, families)
        tables.update(mnist_tables(results["mnist"], sizes))
        settings["mnist"] = {**sizes, "families": list(families)}
        notes += [
            "MNIST: every encoder family trained with the same architecture, data, epochs, "
            "optimiser and seed; test images statically binarised once (seed 10000).",
            "ELBO - ELBO(diag): mean over the same test images of the per-image difference; "
            "its +- is the paired standard error (sd of the differences / sqrt(n)).",
            "Gaps (Cremer et al. 2018): approximation = log p(x) - ELBO(q*), amortisation = "
            "ELBO(q*) - ELBO(q_enc); q* fitted per image in the encoder's own family "
            "(experiment.gaps default), log p(x) by IS with q* as proposal.",
        ]
        files += _curve_picture(out, results["mnist"])
    common.publish(
        out, NAME, settings=settings, results=results, tables=tables, notes=notes, plots=files
    )
    return results


def _curve_picture(out: Any, res: dict[str, Any]) -> list[str]:
    """A bar chart of the MNIST test ELBO and log p(x) per encoder (the leg's picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(res["families"])
    elbo = [res["families"][f]["test"]["elbo"] for f in fams]
    ll = [res["families"][f]["test"]["log_likelihood"] for f in fams]
    fig, ax = plt.subplots(figsize=(4, 3))
    x = np.arange(len(fams))
    ax.bar(x - 0.2, elbo, 0.4, label="test ELBO")
    ax.bar(x + 0.2, ll, 0.4, label="log p(x) (IS)")
    ax.set_xticks(x, fams)
    lo = min(elbo + ll)
    ax.set_ylim(lo - 0.05 * abs(lo), max(elbo + ll) + 0.02 * abs(lo))
    ax.legend(fontsize=8)
    ax.set_title("MNIST test bounds per encoder family", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "families_mnist.png", dpi=80)
    plt.close(fig)
    return ["families_mnist.png"]


if __name__ == "__main__":
    main()
