"""Discrete-latent gradient estimators graded against exact answers (enumeration).

`python -m benchmarks discrete_estimators [--quick] [--out DIR]`

1. Gradient quality: a binary VAE with D (10; quick 6) latents is trained on dynamically
   binarised digits; on a test batch the exact ELBO gradient w.r.t. the encoder is
   `jax.grad(exact_elbo)` (all 2^D configurations), and every discrete-capable
   estimator's encoder gradient is drawn R times: bias (noise-corrected), total variance,
   and mean per-coordinate SNR |E g| / std g.
2. Training curves: the "linear" (200 latents, linear maps) and "nonlinear" (200-200
   tanh) binary VAEs, trained for the same number of steps with each estimator; the
   train ELBO (the estimator's own unbiased value) against the step.
3. The lecture's 2^20 sum: a 20-latent binary VAE (linear decoder) is trained, then for
   each test image the exact log p(x) by chunked enumeration of all 2^20 configurations
   (time per image stated), and the error of the ELBO, IWAE K = 5, 50, 5000 and
   importance sampling from the prior against it.

Data: MNIST from the vi_jax cache when present (offline), else scikit-learn's 8x8
digits (64 pixels), stated in the settings.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from vi_jax.estimators import discrete, registry
from vi_jax.estimators.importance import importance_log_marginal
from vi_jax.models import make_binary_vae, merge_params, split_params

NAME = "discrete_estimators"


def load_data(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Grey levels in [0, 1]: (train, test, name); MNIST if cached, else 8x8 digits."""
    if not quick:
        try:
            from vi_jax.data import load_mnist

            tr = load_mnist("train", offline=True, sources=()).images.astype(np.float32) / 255
            te = load_mnist("test", offline=True, sources=()).images.astype(np.float32) / 255
            return tr, te, "MNIST (dynamically binarised)"
        except Exception:  # noqa: BLE001 (not cached: fall back, and say so)
            pass
    from vi_jax.data import load_digits

    x = load_digits().images
    return x[:1500], x[1500:], "sklearn 8x8 digits (dynamically binarised; MNIST not cached)"


def binarize(key, x):
    return (jax.random.uniform(key, x.shape) < x).astype(jnp.float32)


# ------------------------------------------------------------------ estimators compared

# name -> (registry name, K, options); K is samples (pairs for ARM/DisARM).
CHOICES = {
    "score_function": ("score_function", 1, {}),
    "score_function_loo (K=2)": ("score_function_loo", 2, {}),
    "nvil": ("nvil", 1, {}),
    "nvil, untrained baseline": ("nvil", 1, {}),
    "arm": ("arm", 1, {}),
    "disarm": ("disarm", 1, {}),
    "gumbel_softmax tau=1": ("gumbel_softmax", 1, {"temperature": 1.0}),
    "gumbel_softmax tau=0.5": ("gumbel_softmax", 1, {"temperature": 0.5}),
    "gumbel_softmax tau=0.1": ("gumbel_softmax", 1, {"temperature": 0.1}),
    "straight_through tau=1": ("straight_through", 1, {"temperature": 1.0}),
}
EVALS = {"arm": 2, "disarm": 2, "gumbel_softmax": 2}  # log_joint calls per sample


def make_loss(graphdef, rest, name: str, k: int, options: dict, uses_nvil: bool):
    est = registry.get_estimator("elbo", name).fn

    def loss(params, x, key, state):
        model = merge_params(graphdef, params, rest)
        q, lj = model.posterior(x), model.log_joint_fn(x)
        kw = dict(options)
        base = model.baseline(x)
        if uses_nvil:
            kw.update(baseline=base, state=state)
        value = est(key, lj, q, k, **kw)
        return -jnp.mean(value), (value, base)

    return loss


def train(model, x_train, steps, name, k, options, *, seed=0, lr=3e-3, batch=50, log_every=25):
    """Adam on one estimator; returns (params, graphdef, rest, [(step, mean train ELBO)])."""
    graphdef, params, rest = split_params(model)
    uses_nvil = name == "nvil"
    loss = make_loss(graphdef, rest, name, k, options, uses_nvil)
    opt = optax.adam(lr)
    opt_state = opt.init(params)
    x_train = jnp.asarray(x_train)

    @jax.jit
    def step(params, opt_state, nstate, key):
        kb, kx, ke = jax.random.split(key, 3)
        idx = jax.random.randint(kb, (batch,), 0, x_train.shape[0])
        x = binarize(kx, x_train[idx])
        (_, (value, base)), g = jax.value_and_grad(loss, has_aux=True)(params, x, ke, nstate)
        upd, opt_state = opt.update(g, opt_state, params)
        if uses_nvil:
            nstate = discrete.nvil_update(nstate, value - base)
        return optax.apply_updates(params, upd), opt_state, nstate, jnp.mean(value)

    nstate = discrete.nvil_init()
    keys = jax.random.split(jax.random.key(seed), steps)
    curve, acc = [], []
    for i in range(steps):
        params, opt_state, nstate, v = step(params, opt_state, nstate, keys[i])
        acc.append(v)
        if (i + 1) % log_every == 0 or i + 1 == steps:
            curve.append((i + 1, float(np.mean(jax.device_get(acc)))))
            acc = []
    return params, graphdef, rest, curve


# ------------------------------------------------------------------ 1. gradient quality


def train_baseline(params, graphdef, rest, x_train, steps, *, seed=5, lr=3e-3, batch=50):
    """NVIL's baseline network fitted on a fixed model: the squared error of the signal.

    Only `params["baseline_net"]` moves (Adam on NVIL's own fit term, whose gradient is
    -(f - c - C(x)) dC/dpsi), and the running moments (c, s^2) are updated each step,
    exactly as during NVIL training, with the encoder and decoder frozen.

    Returns:
      `(params with the fitted baseline, NVILState, [(step, mean squared residual)])`.
    """
    x_train = jnp.asarray(x_train)
    opt = optax.adam(lr)
    bparams = params["baseline_net"]
    opt_state = opt.init(bparams)

    def loss(bp, x, key, nstate):
        p = dict(params)
        p["baseline_net"] = bp
        m = merge_params(graphdef, p, rest)
        base = m.baseline(x)
        value = discrete.nvil(
            key, m.log_joint_fn(x), m.posterior(x), 1, baseline=base, state=nstate
        )
        return -jnp.mean(value), (value, base)

    @jax.jit
    def step(bp, opt_state, nstate, key):
        kb, kx, ke = jax.random.split(key, 3)
        x = binarize(kx, x_train[jax.random.randint(kb, (batch,), 0, x_train.shape[0])])
        (_, (value, base)), g = jax.value_and_grad(loss, has_aux=True)(bp, x, ke, nstate)
        upd, opt_state = opt.update(g, opt_state, bp)
        residual = jnp.mean((value - nstate.mean - base) ** 2)
        return (
            optax.apply_updates(bp, upd),
            opt_state,
            discrete.nvil_update(nstate, value - base),
            residual,
        )

    nstate = discrete.nvil_init()
    log = []
    for i, key in enumerate(jax.random.split(jax.random.key(seed), steps)):
        bparams, opt_state, nstate, r = step(bparams, opt_state, nstate, key)
        if i == 0 or (i + 1) % max(steps // 4, 1) == 0:
            log.append((i + 1, float(r)))
    out = dict(params)
    out["baseline_net"] = bparams
    return out, nstate, log


def gradient_study(x_train, x_test, d, train_steps, reps, labels, baseline_steps):
    model = make_binary_vae(x_train.shape[1], d, (64,), "tanh", rngs=0, decoder_hidden=(64,))
    params, graphdef, rest, _ = train(model, x_train, train_steps, "disarm", 1, {})
    untrained = params
    params, nstate, baseline_log = train_baseline(params, graphdef, rest, x_train, baseline_steps)
    # Graded with C(x) and c from the fit but s = 1: dividing by s only shortens the
    # gradient (a step size), which would read as a bias against the exact gradient.
    nvil_state = discrete.NVILState(nstate.mean, jnp.ones_like(nstate.var))
    x = binarize(jax.random.key(1), jnp.asarray(x_test[:16]))
    enc = params["encoder"]

    def model_at(enc_params, base=params):
        p = dict(base)
        p["encoder"] = enc_params
        return merge_params(graphdef, p, rest)

    def exact(enc_params):
        m = model_at(enc_params)
        return jnp.sum(discrete.exact_elbo(m.log_joint_fn(x), m.posterior(x)))

    t0 = time.perf_counter()
    g_exact = jax.flatten_util.ravel_pytree(jax.grad(exact)(enc))[0]
    exact_s = time.perf_counter() - t0
    rows = []
    keys = jax.random.split(jax.random.key(2), reps)
    for label in labels:
        name, k, options = CHOICES[label]
        est = registry.get_estimator("elbo", name).fn

        def one(key, est=est, k=k, options=options, name=name, label=label):
            def s(enc_params):
                m = model_at(enc_params, untrained if "untrained" in label else params)
                kw = dict(options)
                if name == "nvil":
                    kw["baseline"] = m.baseline(x)
                    if "untrained" not in label:
                        kw["state"] = nvil_state
                return jnp.sum(est(key, m.log_joint_fn(x), m.posterior(x), k, **kw))

            return jax.flatten_util.ravel_pytree(jax.grad(s)(enc))[0]

        draws = jax.jit(lambda ks, one=one: jax.lax.map(one, ks, batch_size=min(reps, 100)))
        g = np.asarray(draws(keys), np.float64)  # [R, P]
        mean = g.mean(0)
        var = g.var(0, ddof=1)
        bias2 = max(float(np.sum((mean - g_exact) ** 2) - np.sum(var) / reps), 0.0)
        snr = np.abs(np.asarray(g_exact)) / np.sqrt(var + 1e-30)
        # One scalar test of unbiasedness: the draws projected on the exact direction.
        u = np.asarray(g_exact, np.float64) / np.linalg.norm(g_exact)
        proj = g @ u
        z_along = (proj.mean() - float(np.linalg.norm(g_exact))) / (
            proj.std(ddof=1) / np.sqrt(reps)
        )
        z2 = (mean - g_exact) ** 2 / (var / reps + 1e-30)
        rows.append(
            {
                "estimator": label,
                "log_joint calls": k * EVALS.get(name, 1),
                "bias": float(np.sqrt(bias2)),
                "bias / |grad|": float(np.sqrt(bias2) / np.linalg.norm(g_exact)),
                "max |z|": float(np.sqrt(np.max(z2))),
                "z along exact": float(z_along),
                "mean z^2": float(np.mean(z2)),
                "variance": float(np.sum(var)),
                "SNR": float(np.mean(snr)),
            }
        )
    return {
        "latents": d,
        "encoder_params": int(g_exact.size),
        "exact_gradient_seconds": exact_s,
        "grad_norm": float(np.linalg.norm(g_exact)),
        "baseline_steps": baseline_steps,
        "baseline_fit": baseline_log,
        "nvil_running_mean": float(nstate.mean),
        "rows": rows,
    }


# ------------------------------------------------------------------ 2. training curves

TRAIN_CHOICES = (
    "score_function_loo (K=2)",
    "nvil",
    "arm",
    "disarm",
    "gumbel_softmax tau=0.5",
    "straight_through tau=1",
)


def curves_study(x_train, steps, archs, labels):
    out = {}
    for arch in archs:
        hidden = {"linear": (), "nonlinear": (200,)}[arch]
        out[arch] = {}
        for label in labels:
            name, k, options = CHOICES[label]
            model = make_binary_vae(x_train.shape[1], 200, hidden, "tanh", rngs=0)
            t0 = time.perf_counter()
            *_, curve = train(
                model, x_train, steps, name, k, options, log_every=max(steps // 20, 1)
            )
            out[arch][label] = {"curve": curve, "seconds": time.perf_counter() - t0}
    return out


# ------------------------------------------------------------------ 3. the 2^20 sum


def exact_study(x_train, x_test, d, train_steps, num_images, big_k):
    model = make_binary_vae(x_train.shape[1], d, (200,), "tanh", rngs=0, decoder_hidden=())
    params, graphdef, rest, _ = train(model, x_train, train_steps, "disarm", 1, {})
    m = merge_params(graphdef, params, rest)
    x = binarize(jax.random.key(3), jnp.asarray(x_test[:num_images]))
    exact_fn = jax.jit(lambda xi: merge_params(graphdef, params, rest).exact_log_marginal(xi))
    jax.block_until_ready(exact_fn(x[:1]))  # compile
    t0 = time.perf_counter()
    exact = np.concatenate([np.asarray(exact_fn(x[i : i + 1])) for i in range(num_images)])
    per_image = (time.perf_counter() - t0) / num_images

    lj, q, prior = m.log_joint_fn(x), m.posterior(x), m.prior_distribution()
    key = jax.random.key(4)
    ests = {}
    z = q.sample(seed=key, sample_shape=(1000,))
    ests["ELBO (1000-sample mean)"] = np.asarray(jnp.mean(lj(z) - q.log_prob(z), 0))
    is_se = {}
    for kk in (5, 50, big_k):
        r = importance_log_marginal(key, lj, q, kk, chunk_size=min(kk, 1000))
        ests[f"IWAE K={kk}"] = np.asarray(r.log_marginal)
        # delta method: s.e. of log p^ = s.e.(p^) / p^
        is_se[f"IWAE K={kk}"] = np.exp(np.asarray(r.log_stderr - r.log_marginal))
    # the lecture's naive estimate: p(x) = E_{p(z)}[p(x | z)]
    zp = prior.sample(seed=key, sample_shape=(big_k, num_images))
    ests[f"IS from the prior K={big_k}"] = np.asarray(
        jax.nn.logsumexp(lj(zp) - prior.log_prob(zp), 0) - np.log(big_k)
    )
    rows = [{"estimate": f"exact (2^{d} terms)", "mean": float(exact.mean()), "error": 0.0}]
    for label, v in ests.items():
        err = v - exact
        rows.append(
            {
                "estimate": label,
                "mean": float(v.mean()),
                "error": float(err.mean()),
                "error s.e.": float(err.std(ddof=1) / np.sqrt(err.size)) if err.size > 1 else None,
                "max |error|": float(np.max(np.abs(err))),
                "IS s.e. (mean)": float(is_se[label].mean()) if label in is_se else None,
                "max |error| / IS s.e.": (
                    float(np.max(np.abs(err) / is_se[label])) if label in is_se else None
                ),
            }
        )
    return {"latents": d, "images": num_images, "seconds_per_image": per_image, "rows": rows}


# ------------------------------------------------------------------ plots and main

UNBIASED = ("score_function", "score_function_loo (K=2)", "nvil", "arm", "disarm")


def checks(grad, exact) -> list[str]:
    """The issue's claims, read off this run's numbers (PASS / FAIL each)."""
    rows = {r["estimator"]: r for r in grad["rows"]}
    out = []
    for label in UNBIASED:
        if label in rows:
            z = rows[label]["z along exact"]
            out.append(
                f"{'PASS' if abs(z) < 4 else 'FAIL'}: {label} unbiased along the exact "
                f"gradient, z = {z:.2f} (|z| < 4); mean z^2 over parameters "
                f"{rows[label]['mean z^2']:.3f} (1 if unbiased)"
            )
    if "arm" in rows and "disarm" in rows:
        va, vd = rows["arm"]["variance"], rows["disarm"]["variance"]
        out.append(f"{'PASS' if vd <= va else 'FAIL'}: DisARM variance {vd:.4g} <= ARM {va:.4g}")
    taus = [r for r in grad["rows"] if r["estimator"].startswith("gumbel_softmax")]
    if len(taus) > 1:  # listed in decreasing temperature
        b, v = [r["bias"] for r in taus], [r["variance"] for r in taus]
        ok = all(x > y for x, y in zip(b, b[1:], strict=False)) and all(
            x < y for x, y in zip(v, v[1:], strict=False)
        )
        out.append(
            f"{'PASS' if ok else 'FAIL'}: Concrete relaxation as tau falls: bias "
            f"{', '.join(f'{x:.3g}' for x in b)} falls, variance "
            f"{', '.join(f'{x:.3g}' for x in v)} rises"
        )
    big = [r for r in exact["rows"] if r["estimate"].startswith("IWAE") and r["IS s.e. (mean)"]]
    if big:
        r = big[-1]
        ratio = r["max |error| / IS s.e."]
        out.append(
            f"{'PASS' if ratio < 4 else 'FAIL'}: exact 2^{exact['latents']} log p(x) vs "
            f"{r['estimate']}: max over {exact['images']} images of |error| / IS s.e. = "
            f"{ratio:.2f} (< 4); mean error {r['error']:.4g} +- {r['error s.e.'] or 0:.2g}"
        )
    return out


def plots(out, grad, curves) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    axes = axes[0]
    for ax, arch in zip(axes, curves, strict=False):
        for label, r in curves[arch].items():
            s, v = zip(*r["curve"], strict=True)
            ax.plot(s, v, label=label)
        ax.set_xlabel("training step")
        ax.set_ylabel("train ELBO (nats per image)")
        ax.set_title(f"{arch} binary VAE, 200 latents")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=110)
    files.append("training_curves.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in grad["rows"]:
        ax.scatter(r["variance"], r["bias"] + 1e-6)
        ax.annotate(r["estimator"], (r["variance"], r["bias"] + 1e-6), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("total variance of the encoder gradient")
    ax.set_ylabel("bias ||E g - exact gradient|| (noise-corrected)")
    ax.set_title(f"D = {grad['latents']} trained binary VAE, exact gradient by enumeration")
    fig.tight_layout()
    fig.savefig(out / "bias_variance.png", dpi=110)
    files.append("bias_variance.png")
    plt.close(fig)
    return files


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--steps", type=int, default=None, help="override every training length")
    ap.add_argument("--curve-steps", type=int, default=None, help="override curve lengths")
    ap.add_argument("--reps", type=int, default=None, help="override gradient draws")
    ap.add_argument("--images", type=int, default=None, help="override 2^20 test images")
    args = ap.parse_args(argv)
    x_train, x_test, data_name = load_data(args.quick)
    if args.quick:
        cfg = dict(
            grad_d=6,
            grad_train=5,
            baseline_steps=5,
            reps=50,
            curve_steps=4,
            exact_d=8,
            exact_train=5,
            images=2,
            big_k=500,
        )
        grad_labels = ["disarm", "nvil", "gumbel_softmax tau=0.5"]
        archs, train_labels = ("linear",), ("disarm",)
    else:
        cfg = dict(
            grad_d=10,
            grad_train=1000,
            baseline_steps=1000,
            reps=2000,
            curve_steps=1000,
            exact_d=20,
            exact_train=2000,
            images=100,
            big_k=5000,
        )
        grad_labels, archs, train_labels = list(CHOICES), ("linear", "nonlinear"), TRAIN_CHOICES
    if args.steps:
        cfg.update(grad_train=args.steps, curve_steps=args.steps, exact_train=args.steps)
        cfg.update(baseline_steps=args.steps)
    if args.curve_steps:
        cfg["curve_steps"] = args.curve_steps
    if args.reps:
        cfg["reps"] = args.reps
    if args.images:
        cfg["images"] = args.images
    cfg.update(gradient_estimators=list(grad_labels), archs=list(archs))
    out = common.out_dir(NAME, args.out)
    t0 = time.perf_counter()
    grad = gradient_study(
        x_train,
        x_test,
        cfg["grad_d"],
        cfg["grad_train"],
        cfg["reps"],
        grad_labels,
        cfg["baseline_steps"],
    )
    t_grad = time.perf_counter() - t0
    print(f"{NAME}: gradients done ({t_grad:.0f} s)", flush=True)
    curves = curves_study(x_train, cfg["curve_steps"], archs, train_labels)
    t_curves = time.perf_counter() - t0 - t_grad
    print(f"{NAME}: curves done ({t_curves:.0f} s)", flush=True)
    exact = exact_study(
        x_train, x_test, cfg["exact_d"], cfg["exact_train"], cfg["images"], cfg["big_k"]
    )
    files = plots(out, grad, curves)
    tables = {
        f"Encoder gradient vs the exact gradient (D = {grad['latents']}, 16 test images, "
        f"{cfg['reps']} draws, |exact grad| = {grad['grad_norm']:.4g})": common.markdown_table(
            grad["rows"],
            [
                "estimator",
                "log_joint calls",
                "bias",
                "bias / |grad|",
                "z along exact",
                "mean z^2",
                "max |z|",
                "variance",
                "SNR",
            ],
        ),
        f"Final train ELBO after {cfg['curve_steps']} steps (mean of the last log interval)": (
            common.markdown_table(
                [
                    {
                        "estimator": label,
                        **{arch: curves[arch][label]["curve"][-1][1] for arch in archs},
                        "seconds (all models)": sum(curves[a][label]["seconds"] for a in archs),
                    }
                    for label in train_labels
                ],
                ["estimator", *archs, "seconds (all models)"],
            )
        ),
        f"log p(x) of {exact['images']} test images, exact sum over 2^{exact['latents']} "
        f"configurations ({exact['seconds_per_image']:.3g} s per image)": common.markdown_table(
            exact["rows"],
            [
                "estimate",
                "mean",
                "error",
                "error s.e.",
                "max |error|",
                "IS s.e. (mean)",
                "max |error| / IS s.e.",
            ],
        ),
    }
    notes = [
        f"data: {data_name}; training: Adam 3e-3, batch 50; the D = {grad['latents']} and "
        f"D = {exact['latents']} models were trained with DisARM for {cfg['grad_train']} and "
        f"{cfg['exact_train']} steps.",
        "bias is sqrt(max(0, ||mean - exact||^2 - sum var / R))); max |z| = max over encoder "
        "parameters of |mean - exact| / s.e.; SNR = mean over parameters of |exact| / std.",
        f"nvil: the baseline network C(x) was fitted for {grad['baseline_steps']} Adam steps "
        "(squared error of the learning signal, encoder and decoder frozen) on the same "
        f"model, then graded with C(x) and the running mean c = {grad['nvil_running_mean']:.4g} "
        "and s = 1 (s only rescales; in training it is used); fit, mean squared residual by "
        f"step: {', '.join(f'{i}: {r:.4g}' for i, r in grad['baseline_fit'])}. "
        "'nvil, untrained baseline' is the same estimator with the initial network and no "
        "running mean. In the training curves NVIL's baseline is trained jointly (its fit "
        "term is in NVIL's surrogate) and its running moments updated every step.",
        "ARM/DisARM use one antithetic pair (2 log_joint calls); gumbel_softmax spends its "
        "second call on the value only.",
        f"total wall time {time.perf_counter() - t0:.1f} s (gradients {t_grad:.0f} s, curves "
        f"{t_curves:.0f} s, 2^D table {time.perf_counter() - t0 - t_grad - t_curves:.0f} s)",
        *checks(grad, exact),
    ]
    settings = {"quick": args.quick, "data": data_name, **cfg}
    results = {"gradients": grad, "curves": curves, "exact": exact}
    common.publish(
        out, NAME, settings=settings, results=results, tables=tables, notes=notes, plots=files
    )
    return results
