"""Evaluation speed: the K = 5000 importance-sampled test log-likelihood, vi_jax vs hand-written.

The protocol of every reported NLL (`vi_jax.inference.evaluate_model`, K = 5000 samples
per image, drawn `sample_chunk` at a time in a `lax.scan` (the library's default,
`default_sample_chunk`: 25 for MNIST on a CPU, 500 on an accelerator), `data_chunk` = 100
images per compiled call) on the 784-400-20 VAE (`pytorch_example_vae`, parameters at their
initialisation: the cost does not depend on their values), against a hand-written JAX
evaluator of the same chunking and the same outputs (log p(x) and its standard error
from streaming log-sum-exp moments, a one-sample reconstruction term, the closed-form
KL, the posterior mean). Legs:

- `vi_jax`: `evaluate_model(key, params, vae_view(graphdef, rest), x, ...)`;
- `vi_jax (sample_chunk 500)`: the same program at the fixed `sample_chunk` = 500 that was
  the default before issue 19's session 7: the A/B of the backend-sized chunk;
- `vi_jax (jax.random.normal noise)`: the same program with q a plain
  `distrax.MultivariateNormalDiag` (noise from `jax.random.normal`) instead of the library's
  `vi_jax.families.MultivariateNormalDiag` (noise from `vi_jax._prng.normal`): the A/B of
  the library's draws;
- `hand-written (jax.nn.softplus)`: plain jnp, Bernoulli `x*l - jax.nn.softplus(l)`;
- `hand-written (max+log1p)`: the same with NumPyro's `max(l, 0) + log1p(exp(-|l|))`
  softplus: the A/B of the likelihood's softplus form on a forward-only workload;
- `hand-written (row log-lik)`: the same program with the image log-likelihood from
  `vi_jax.models.bernoulli_row_log_prob` (one `log` per group of pixels instead of a
  `log1p` each): the A/B of the library's row rule against the elementwise form it
  replaced, with everything else equal.

Repetitions of the legs are interleaved (order alternating); each repetition evaluates
the same `num_examples` images. Reported: images/s (median, IQR), the first (compiling)
repetition separately, FLOP/s against an in-process matmul peak (FLOPs from XLA's cost
analysis of one sample chunk's program, times the number of chunks: the analysis counts
a loop body once), the compiled chunk program's memory footprint (and, on an
accelerator, the device's peak bytes in use), and the time the full 10,000-image test
set would take at that rate.

    python -m benchmarks evaluation [--quick] [--out DIR] [--reps N] [--examples N]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import common

NAME = "evaluation"
TEST_SET = 10_000
# sample_chunk None: the library's default for this backend (`default_sample_chunk`).
FULL = {"K": 5000, "sample_chunk": None, "data_chunk": 100, "examples": 200, "reps": 5}
QUICK = {"K": 100, "sample_chunk": 50, "data_chunk": 20, "examples": 40, "reps": 2}
SOFTPLUS = {
    "jax.nn.softplus": lambda jnp, jax: jax.nn.softplus,
    "max+log1p": lambda jnp, jax: lambda v: jnp.maximum(v, 0) + jnp.log1p(jnp.exp(-jnp.abs(v))),
}
# The library's whole-image rule, in place of `sum(x * l - softplus(l), -1)`.
ROW_FORM = "row log-lik"
FORMS = (*SOFTPLUS, ROW_FORM)
# The fixed sample chunk `evaluate_model` used before it sized its chunk to the backend.
PREVIOUS_CHUNK = 500
PREVIOUS = f"vi_jax (sample_chunk {PREVIOUS_CHUNK})"
JAX_NOISE = "vi_jax (jax.random.normal noise)"


def jax_noise_view(view: Callable[..., Any]) -> Callable[..., Any]:
    """`view` with its posterior rebuilt as a plain `distrax.MultivariateNormalDiag`."""
    import distrax

    def model_fn(params: Any, x: Any) -> Any:
        v = view(params, x)
        q = v.posterior
        return v._replace(posterior=distrax.MultivariateNormalDiag(q.loc, q.scale_diag))

    return model_fn


def load_images(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """`n` binary images `float32 [n, 784]`: cached MNIST test (static binarisation) or random."""
    from benchmarks.throughput_numpyro import load_batch

    return load_batch(n, 784, seed)


def handwritten_chunk_fn(
    params: Any, num_samples: int, sample_chunk: int, softplus_form: str
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """A hand-written jitted evaluator of one data chunk, with the library's chunking.

    Args:
      params: the VAE's `nnx.State` (weights read by path; nothing from vi_jax is called
        but, for `ROW_FORM`, `bernoulli_row_log_prob`).
      num_samples: K.
      sample_chunk: samples per scan step (K must be a multiple of it).
      softplus_form: a key of `SOFTPLUS`, or `ROW_FORM`.

    Returns:
      `(run, body)`: `run(params, x [B, 784], key) -> dict` of per-image outputs, and
      `body(params, x, key) -> log_w [sample_chunk, B]`, one scan step (for its FLOPs).
    """
    import jax
    import jax.numpy as jnp

    from vi_jax.models import bernoulli_row_log_prob

    row = softplus_form == ROW_FORM
    softplus = None if row else SOFTPLUS[softplus_form](jnp, jax)
    if num_samples % sample_chunk:
        raise ValueError("`num_samples` must be a multiple of `sample_chunk` here.")
    n_chunks = num_samples // sample_chunk

    def dense(p: Any, h: Any) -> Any:
        return h @ p["kernel"] + p["bias"]

    def encode(p: Any, x: Any) -> tuple[Any, Any]:
        h = jax.nn.relu(dense(p["encoder"]["net"]["layers"][0], x))
        out = dense(p["encoder"]["net"]["layers"][1], h)
        loc, raw = jnp.split(out, 2, axis=-1)
        return loc, jax.nn.softplus(raw) + 1e-4

    def log_lik(p: Any, x: Any, z: Any) -> Any:
        layers = p["decoder"]["net"]["layers"]
        n, b, d = z.shape
        logits = dense(layers[1], jax.nn.relu(dense(layers[0], z.reshape(n * b, d))))
        logits = logits.reshape(n, b, -1)
        if row:
            return bernoulli_row_log_prob(x, logits)
        return jnp.sum(x * logits - softplus(logits), axis=-1)

    def log_normal(z: Any, loc: Any, scale: Any) -> Any:
        u = (z - loc) / scale
        return jnp.sum(-0.5 * u * u - jnp.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1)

    def body(p: Any, x: Any, key: Any) -> Any:
        loc, scale = encode(p, x)
        eps = jax.random.normal(key, (sample_chunk, *loc.shape), loc.dtype)
        z = loc + scale * eps
        return log_normal(z, 0.0, 1.0) + log_lik(p, x, z) - log_normal(z, loc, scale)

    def run(p: Any, x: Any, key: Any) -> dict[str, Any]:
        k_is, k_elbo = jax.random.split(key)
        loc, scale = encode(p, x)

        def step(carry: Any, k: Any) -> tuple[Any, None]:
            m, s1, s2 = carry
            eps = jax.random.normal(k, (sample_chunk, *loc.shape), loc.dtype)
            z = loc + scale * eps
            lw = log_normal(z, 0.0, 1.0) + log_lik(p, x, z) - log_normal(z, loc, scale)
            m_new = jnp.maximum(m, jnp.max(lw, axis=0))
            w = jnp.exp(lw - m_new)
            shift = jnp.exp(m - m_new)
            return (m_new, s1 * shift + w.sum(0), s2 * shift**2 + (w * w).sum(0)), None

        init = (
            jnp.full(loc.shape[:1], -jnp.inf),
            jnp.zeros(loc.shape[:1]),
            jnp.zeros(loc.shape[:1]),
        )
        (m, s1, s2), _ = jax.lax.scan(step, init, jax.random.split(k_is, n_chunks))
        mean = s1 / num_samples
        var = jnp.maximum(s2 / num_samples - mean**2, 0.0) / num_samples
        ll = m + jnp.log(mean)
        z1 = loc + scale * jax.random.normal(k_elbo, loc.shape, loc.dtype)
        recon = log_lik(p, x, z1[None])[0]
        kl = 0.5 * jnp.sum(loc**2 + scale**2 - 1.0 - 2.0 * jnp.log(scale), axis=-1)
        return {
            "log_likelihood": ll,
            "log_likelihood_mc_stderr": jnp.sqrt(var) / mean,
            "recon": recon,
            "kl": kl,
            "elbo": recon - kl,
            "mean": loc,
        }

    return jax.jit(run), jax.jit(body)


def _plain(params: Any) -> Any:
    """`nnx.State` -> nested dicts and lists of arrays (for the hand-written legs)."""
    from flax import nnx

    def conv(v: Any) -> Any:
        if isinstance(v, (dict, nnx.State)):
            keys = list(v.keys())
            if keys and all(isinstance(k, int) for k in keys):
                return [conv(v[k]) for k in sorted(keys)]
            return {k: conv(v[k]) for k in keys}
        return v[...] if hasattr(v, "value") else v

    return conv(params)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks evaluation", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="K=100, 40 images, 2 repetitions")
    ap.add_argument("--out", default=None, help="output folder")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per leg")
    ap.add_argument("--examples", type=int, default=None, help="images per repetition")
    args = ap.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from vi_jax.inference import evaluate as ev
    from vi_jax.models import pytorch_example_vae, split_params, vae_view

    cfg = dict(QUICK if args.quick else FULL)
    if args.reps is not None:
        cfg["reps"] = max(2, args.reps)
    if args.examples is not None:
        cfg["examples"] = args.examples
    k, sc, dc, n = cfg["K"], cfg["sample_chunk"], cfg["data_chunk"], cfg["examples"]
    if sc is None:
        sc = ev.default_sample_chunk(k, dc, 784)
    sc_prev = min(PREVIOUS_CHUNK, k)
    out = common.out_dir(NAME, args.out)
    peak = common.peak_matmul_flops(n=256 if args.quick else None)
    graphdef, params, rest = split_params(pytorch_example_vae(rngs=0))
    plain = _plain(params)
    x_np, data_desc = load_images(n)
    x = jnp.asarray(x_np)
    view = vae_view(graphdef, rest)
    key = jax.random.key(0)

    # The vi_jax leg drives the program `evaluate_model` compiles (`_chunk_fn`) over the
    # data chunks exactly as `evaluate_model` does: `evaluate_model` builds a fresh jit per
    # call, so calling it per repetition would time a compilation each time (its one
    # end-to-end call, compilation included, is reported separately).
    vi_run = ev._chunk_fn(view, k, sc, 1)
    prev_run = ev._chunk_fn(view, k, sc_prev, 1)
    noise_run = ev._chunk_fn(jax_noise_view(view), k, sc, 1)
    legs: dict[str, Callable[[int], Any]] = {}
    bodies: dict[str, Any] = {}
    chunk_programs: dict[str, Any] = {"vi_jax": (vi_run, params)}
    t0 = time.perf_counter()
    ev.evaluate_model(key, params, view, x, num_samples=k, sample_chunk=sc, data_chunk=dc)
    end_to_end_first_s = time.perf_counter() - t0

    def chunked(run: Any, p: Any, i: int) -> Any:
        kk = jax.random.fold_in(key, i)
        outs = [
            run(p, x[s : s + dc], jax.random.fold_in(kk, j))["log_likelihood"]
            for j, s in enumerate(range(0, n, dc))
        ]
        return jnp.concatenate(outs)

    legs["vi_jax"] = lambda i: chunked(vi_run, params, i)
    legs[PREVIOUS] = lambda i: chunked(prev_run, params, i)
    chunk_programs[PREVIOUS] = (prev_run, params)
    legs[JAX_NOISE] = lambda i: chunked(noise_run, params, i)
    chunk_programs[JAX_NOISE] = (noise_run, params)
    for form in FORMS:
        run, body = handwritten_chunk_fn(plain, k, sc, form)
        name = f"hand-written ({form})"
        bodies[name] = body
        chunk_programs[name] = (run, plain)

        legs[name] = lambda i, run=run: chunked(run, plain, i)
    names = list(legs)
    times: dict[str, list[float]] = {m: [] for m in names}
    first: dict[str, float] = {}
    lls: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        common.block(legs[name](0))
        first[name] = time.perf_counter() - t0
    for r in range(cfg["reps"]):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            ll = common.block(legs[name](r + 1))
            times[name].append(time.perf_counter() - t0)
            lls.setdefault(name, float(np.mean(np.asarray(ll))))
    # FLOPs: one sample chunk's program (the scan body) x chunks x data chunks; the same
    # computation for every leg, so the hand-written jax.nn.softplus body stands for all.
    body = bodies["hand-written (jax.nn.softplus)"]
    body_flops = common.compiled_cost(body, plain, x[:dc], key)["flops"]
    flops_per_rep = body_flops * (k // sc) * math.ceil(n / dc)
    # The shape-matched ceiling: the body's matmuls alone, x the same trip count.
    dots = common.dot_ceiling(body, plain, x[:dc], key)
    dots_per_rep_s = dots["dot_s"] * (k // sc) * math.ceil(n / dc)
    # The previous chunk's products have other shapes: their own ceiling.
    _, prev_body = handwritten_chunk_fn(plain, k, sc_prev, "jax.nn.softplus")
    prev_dots = common.dot_ceiling(prev_body, plain, x[:dc], key)
    ceiling_s = {name: dots_per_rep_s for name in names}
    ceiling_s[PREVIOUS] = prev_dots["dot_s"] * (k // sc_prev) * math.ceil(n / dc)
    results: dict[str, Any] = {
        "peak_matmul": peak,
        "legs": {},
        "evaluate_model_first_call_s": end_to_end_first_s,
        "dot_ceiling": dots,
        "dots_only_rep_s": dots_per_rep_s,
        "dots_only_rep_s_previous_chunk": ceiling_s[PREVIOUS],
    }
    rows = []
    for name in names:
        s = common.summarize(times[name])
        prog, p = chunk_programs[name]
        mem = common.compiled_cost(prog, p, x[:dc], key)
        rate = n / s["median_s"]
        roof = common.roofline(flops_per_rep, s["median_s"], peak)
        s.update(
            {
                "images_per_s": rate,
                "images_per_s_q25": n / s["q75_s"],
                "images_per_s_q75": n / s["q25_s"],
                "first_rep_s": first[name],
                "times_s": times[name],
                "mean_log_likelihood": lls[name],
                "chunk_program_memory_bytes": mem["memory_bytes"],
                "full_test_set_s": TEST_SET / rate,
                "fraction_of_dot_ceiling": ceiling_s[name] / s["median_s"],
                **roof,
            }
        )
        results["legs"][name] = s
        rows.append(
            {
                "evaluator": name,
                "images/s": rate,
                "IQR images/s": f"{n / s['q75_s']:.3g}-{n / s['q25_s']:.3g}",
                "GFLOP/s": roof["achieved_flops_per_s"] / 1e9,
                "% of peak": 100 * roof["fraction_of_peak"],
                "% of its matmuls' speed": 100 * ceiling_s[name] / s["median_s"],
                "first rep s (compile)": first[name],
                "chunk program MiB": mem["memory_bytes"] / 2**20,
                "10,000 images s": TEST_SET / rate,
                "mean log p(x)": lls[name],
            }
        )
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        results["device_peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
    ref = results["legs"]["hand-written (jax.nn.softplus)"]["median_s"]
    vj = results["legs"]["vi_jax"]["median_s"]
    results["ratio_vi_jax_over_handwritten_time"] = vj / ref
    results["paired_time_ratio"] = common.paired_ratio(
        times["vi_jax"], times["hand-written (jax.nn.softplus)"]
    )
    ab = np.asarray(times["hand-written (max+log1p)"]) / np.asarray(
        times["hand-written (jax.nn.softplus)"]
    )
    results["softplus_ab_time_ratio_maxlog1p_over_jax"] = float(np.median(ab))
    results["row_loglik_ab_time_ratio"] = common.paired_ratio(
        times[f"hand-written ({ROW_FORM})"], times["hand-written (jax.nn.softplus)"]
    )
    results["chunk_ab_time_ratio"] = common.paired_ratio(times["vi_jax"], times[PREVIOUS])
    chunk_ab = results["chunk_ab_time_ratio"]
    results["noise_ab_time_ratio"] = common.paired_ratio(times["vi_jax"], times[JAX_NOISE])
    noise_ab = results["noise_ab_time_ratio"]
    notes = [
        f"vi_jax time / hand-written (jax.nn.softplus) time = {vj / ref:.3f} (paired median "
        f"{results['paired_time_ratio']['median']:.3f}, IQR "
        f"{results['paired_time_ratio']['q25']:.3f}-{results['paired_time_ratio']['q75']:.3f};"
        " target <= 1.05).",
        "Softplus A/B (forward only): max+log1p / jax.nn.softplus time = "
        f"{float(np.median(ab)):.3f} (paired median).",
        f"Row log-likelihood A/B (forward only): hand-written ({ROW_FORM}) / "
        f"hand-written (jax.nn.softplus) time = {results['row_loglik_ab_time_ratio']['median']:.3f}"
        f" (paired median, IQR {results['row_loglik_ab_time_ratio']['q25']:.3f}-"
        f"{results['row_loglik_ab_time_ratio']['q75']:.3f}): what bernoulli_row_log_prob "
        "buys over the elementwise form, everything else equal.",
        f"Sample chunk A/B: vi_jax at sample_chunk {sc} / at {sc_prev} (the fixed default "
        f"before) time = {chunk_ab['median']:.3f} (paired median, IQR "
        f"{chunk_ab['q25']:.3f}-{chunk_ab['q75']:.3f}).",
        "Noise A/B: vi_jax (vi_jax._prng.normal) / vi_jax (jax.random.normal) time = "
        f"{noise_ab['median']:.3f} (paired median, IQR {noise_ab['q25']:.3f}-"
        f"{noise_ab['q75']:.3f}).",
        f"FLOPs per repetition {flops_per_rep / 1e12:.3g} TFLOP ({n} images, K={k}); peak = "
        f"{peak['n']}x{peak['n']} float32 matmul in this process, "
        f"{peak['flops_per_s'] / 1e9:.0f} GFLOP/s.",
        f"Its matmuls alone: the {dots['num_dots']} dot_generals of one sample chunk replayed "
        "with the same shapes, each alone (`common.dot_ceiling`), x the "
        f"chunks: {dots_per_rep_s:.2f} s per repetition at sample_chunk {sc} "
        f"({ceiling_s[PREVIOUS]:.2f} s at {sc_prev}) "
        f"({dots['dot_flops_per_s'] / 1e9:.0f} GFLOP/s); % of its matmuls' speed = that / "
        "the leg's median time (the rest is the likelihood's elementwise work and the "
        "reductions).",
        f"evaluate_model end to end, first call (compile + {n} images): "
        f"{end_to_end_first_s:.2f} s.",
        f"Data: {data_desc}. Parameters at initialisation (pytorch_example_vae(rngs=0)).",
        "chunk program MiB = XLA's memory analysis of one data chunk's compiled program "
        "(arguments + outputs + temporaries).",
    ]
    if "device_peak_bytes_in_use" in results:
        notes.append(
            f"Device peak bytes in use: {results['device_peak_bytes_in_use'] / 2**20:.0f} MiB."
        )
    cols = list(rows[0])
    settings = {
        "quick": args.quick,
        "num_samples": k,
        "sample_chunk": sc,
        "data_chunk": dc,
        "examples_per_rep": n,
        "reps": cfg["reps"],
        "model": "pytorch_example_vae 784-400-20, Bernoulli, untrained",
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    rates = [results["legs"][m]["images_per_s"] for m in names]
    ax.bar(range(len(names)), rates, color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_ylabel("images / s (median)")
    ax.set_title(f"K={k} importance-sampled log p(x)")
    fig.tight_layout()
    fig.savefig(out / f"{NAME}.png", dpi=100)
    plt.close(fig)
    common.publish(
        out,
        NAME,
        settings=settings,
        results=results,
        tables={"K-sample evaluation": common.markdown_table(rows, cols)},
        notes=notes,
        plots=[f"{NAME}.png"],
    )
    return results


if __name__ == "__main__":
    main()
