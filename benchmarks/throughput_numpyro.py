"""Throughput against a peer: ELBO and IWAE value-and-gradient per second, vi_jax vs NumPyro.

One VAE (the PyTorch `examples/vae` shape: 784-400-20 ReLU encoder giving loc and
softplus scale, 20-400-784 decoder giving Bernoulli logits, standard-normal prior),
written once as pure functions of a plain parameter dict that both legs share:

- vi_jax: `-mean(estimator(key, log_joint, q, K))` with `elbo_pathwise` / `iwae_pathwise`
  and `q = vi_jax.families.MultivariateNormalDiag(loc, scale)` (the encoders' q: distrax's
  diagonal Gaussian with its noise from `vi_jax._prng.normal`);
- NumPyro: `Trace_ELBO(num_particles=K)` / `RenyiELBO(alpha=0, num_particles=K)` (IWAE)
  on a `model`/`guide` pair that closes over the same parameters, divided by the batch
  size so that both values are per-example means;

each `jax.jit(jax.value_and_grad(loss))` w.r.t. the parameter dict, at the same batch and
K, measured in one process with the repetitions of the two legs interleaved. The first
call of each (trace + compile + one run) is timed separately and excluded. A cross-check
guards against timing two different computations: over the timed calls (fresh keys each)
the two legs' mean losses must agree within Monte Carlo error.

The networks are shared; each leg uses its own library's distributions. In particular the
Bernoulli log-likelihood is `vi_jax.models.bernoulli_likelihood` (`x*l - softplus(l)` with
`jax.nn.softplus`) in one leg and `numpyro.distributions.Bernoulli`
(`x*l - max(l, 0) - log1p(exp(-|l|))`) in the other: equal values, not equal cost.

Data: the first B images of the cached MNIST test split, statically binarised (seed 0),
when MNIST is already in the `vi_jax.data` cache; otherwise a fixed random Bernoulli(0.5)
batch (throughput does not depend on the pixel values). Nothing is downloaded.

    python -m benchmarks throughput_numpyro [--quick] [--out DIR] [--reps N] [--cpus N]

`--cpus 1` runs both legs on one core (one XLA thread): the legs' work without the
scheduling of two threads over small ops.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import common

NAME = "throughput_numpyro"
OBJECTIVES = ("elbo", "iwae")
LEGS = ("vi_jax", "numpyro")
LABELS = {"vi_jax": "vi_jax", "numpyro": "NumPyro"}
# Flag a case whose two mean losses differ by more than this many combined standard errors.
DISAGREE_SE = 4.0
# Keeps the softplus scale away from 0, as the training_speed hand-written VAE does.
MIN_SCALE = 1e-6
FULL = {
    "data_dim": 784,
    "hidden": 400,
    "latent": 20,
    "batch": 128,
    "ks": [1, 5, 50],
    "reps": 15,
    "target_s": 0.2,
    "max_inner": 500,
    "peak_n": None,
}
# CI runs this: a small model so that it finishes in seconds, compilation included.
QUICK = {
    "data_dim": 784,
    "hidden": 64,
    "latent": 8,
    "batch": 32,
    "ks": [1, 5],
    "reps": 5,
    "target_s": 0.02,
    "max_inner": 20,
    "peak_n": 256,
    # K = 5 in chunks of 2 (with a remainder): the chunked leg and its A/B, at smoke size.
    "sample_chunks": {5: 2},
}

Params = dict[str, dict[str, Any]]
Step = Callable[[Params, Any, Any], Any]
# Keys travel as raw threefry key data (uint32 [2]) made on the host and are wrapped inside
# the jitted step: making typed keys op by op (split, fold_in, unstack) compiles a small
# program per shape, seconds of the --quick budget, and adds a dispatch to each timed call.
KEY_IMPL = "threefry2x32"
KEY_WORDS = 2


# ---------------------------------------------------------------- the shared model
def init_params(seed: int, data_dim: int, hidden: int, latent: int) -> Params:
    """PyTorch `nn.Linear` default init, U(-1/sqrt(n_in), 1/sqrt(n_in)), for every layer.

    Args:
      seed: PRNG seed.
      data_dim: D, pixels per image.
      hidden: H, width of the encoder's and the decoder's hidden layer.
      latent: L, latent dimension.

    Returns:
      `{"enc", "loc", "scale", "dec_h", "dec_out"}`, each `{"w": [n_in, n_out], "b": [n_out]}`.
    """
    import jax.numpy as jnp

    shapes = {
        "enc": (data_dim, hidden),
        "loc": (hidden, latent),
        "scale": (hidden, latent),
        "dec_h": (latent, hidden),
        "dec_out": (hidden, data_dim),
    }
    # Drawn on the host: op-by-op jax.random would compile a dozen small programs, seconds
    # of the --quick budget.
    rng = np.random.default_rng(seed)
    params = {}
    for name, (n_in, n_out) in shapes.items():
        lim = 1.0 / math.sqrt(n_in)
        params[name] = {
            "w": jnp.asarray(rng.uniform(-lim, lim, (n_in, n_out)), jnp.float32),
            "b": jnp.asarray(rng.uniform(-lim, lim, (n_out,)), jnp.float32),
        }
    return params


def _dense(p: dict[str, Any], h: Any) -> Any:
    return h @ p["w"] + p["b"]


def encode(params: Params, x: Any) -> tuple[Any, Any]:
    """Encoder: `x [B, D]` -> `(loc [B, L], scale [B, L])` of the Gaussian q(z | x)."""
    import jax

    h = jax.nn.relu(_dense(params["enc"], x))
    return _dense(params["loc"], h), jax.nn.softplus(_dense(params["scale"], h)) + MIN_SCALE


def decode(params: Params, z: Any) -> Any:
    """Decoder: `z [..., L]` -> Bernoulli logits `[..., D]`."""
    import jax

    return _dense(params["dec_out"], jax.nn.relu(_dense(params["dec_h"], z)))


# ---------------------------------------------------------------------- the two legs
# The vi_jax leg without the sample chunking, timed beside it where chunking applies.
UNCHUNKED = "vi_jax (all K at once)"
# The A/B leg of the library's Gaussian draws: q a plain distrax.MultivariateNormalDiag.
JAX_NOISE = "vi_jax (jax.random.normal noise)"


def chunk_of(num_samples: int, batch: int, data_dim: int) -> int | None:
    """The K-chunk of the vi_jax leg: `make_vae_loss`'s default (`default_log_joint_chunk`)."""
    from vi_jax.estimators import default_log_joint_chunk

    return default_log_joint_chunk(num_samples, batch, data_dim)


def make_vi_jax_step(
    objective: str, num_samples: int, chunk: int | str | None = "auto", noise: str = "library"
) -> Step:
    """`jit(value_and_grad(loss))(params, x, key_data)` with the vi_jax pathwise estimators.

    The decoder is the library's own `BernoulliDecoder(MLP(...))`, as `make_mlp_vae`
    builds it, holding the shared parameter dict's `dec_h` / `dec_out` weights (mapped
    into its `nnx.State` inside the traced loss, so the gradient is still w.r.t. the
    shared dict): the benchmark measures vi_jax's networks, likelihood and prior, and
    any speed the library gains (or loses) shows here. The log joint meets the K samples
    as in `make_vae_loss`'s default (`sample_chunk="auto"`): in chunks of
    `default_log_joint_chunk(K, B, D)` samples where that is not None (on a CPU: K = 50
    at batch 128 is evaluated 5 samples at a time), else all at once.

    Args:
      objective: `"elbo"` (`elbo_pathwise`) or `"iwae"` (`iwae_pathwise`).
      num_samples: K.
      chunk: `"auto"` (`chunk_of`, the library's default), a chunk size, or None for the
        log joint on all K samples at once (the A/B leg).
      noise: `"library"` (q is `vi_jax.families.MultivariateNormalDiag`) or `"jax"` (a
        plain `distrax.MultivariateNormalDiag`, noise from `jax.random.normal`: the A/B leg).

    Returns:
      A jitted function `(params, x [B, D], key_data uint32 [2]) -> (loss, grads)`, loss = minus the
      per-example mean of the K-sample bound.
    """
    import distrax
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vi_jax.estimators import chunk_log_joint
    from vi_jax.estimators.gradients import elbo_pathwise, iwae_pathwise
    from vi_jax.families import MultivariateNormalDiag
    from vi_jax.models import (
        MLP,
        BernoulliDecoder,
        StandardNormalPrior,
        merge_params,
        split_params,
    )

    estimator = {"elbo": elbo_pathwise, "iwae": iwae_pathwise}[objective]
    gaussian = {"library": MultivariateNormalDiag, "jax": distrax.MultivariateNormalDiag}[noise]
    decoders: dict[tuple[int, int, int], Any] = {}

    def library_decoder(params: Params) -> Any:
        latent, hidden = params["dec_h"]["w"].shape
        data_dim = params["dec_out"]["w"].shape[1]
        shape = (latent, hidden, data_dim)
        if shape not in decoders:  # structure only: built once, abstractly (no init cost)
            decoders[shape] = split_params(
                nnx.eval_shape(
                    lambda: BernoulliDecoder(
                        MLP(latent, (hidden,), data_dim, activation="relu", rngs=0)
                    )
                )
            )
        graphdef, state, rest = decoders[shape]
        names = {0: params["dec_h"], 1: params["dec_out"]}
        leaves = [
            names[path[2].key]["w" if path[3].key == "kernel" else "b"]
            for path, _ in jax.tree_util.tree_leaves_with_path(state)
        ]
        return merge_params(graphdef, jax.tree.unflatten(jax.tree.structure(state), leaves), rest)

    def loss(params: Params, x: Any, key_data: Any) -> Any:
        key = jax.random.wrap_key_data(key_data, impl=KEY_IMPL)
        loc, scale = encode(params, x)
        q = gaussian(loc, scale)
        prior = StandardNormalPrior(loc.shape[-1])()
        decoder = library_decoder(params)

        def log_joint(z: Any) -> Any:  # z [K, B, L] -> [K, B]
            return prior.log_prob(z) + decoder(z).log_prob(x)

        size = chunk_of(num_samples, x.shape[0], x.shape[-1]) if chunk == "auto" else chunk
        if size is not None:
            log_joint = chunk_log_joint(log_joint, size)
        return -jnp.mean(estimator(key, log_joint, q, num_samples))

    return jax.jit(jax.value_and_grad(loss))


def make_numpyro_step(objective: str, num_samples: int) -> Step:
    """`jit(value_and_grad(loss))(params, x, key_data)` with NumPyro's ELBO objectives.

    The model and the guide close over the traced parameter dict, so the gradient is
    taken w.r.t. the same pytree as in the vi_jax leg (no `numpyro.param` sites, an empty
    `param_map`). Particles are vectorised with `jax.vmap` (NumPyro's default).

    Args:
      objective: `"elbo"` (`Trace_ELBO`) or `"iwae"` (`RenyiELBO(alpha=0)`).
      num_samples: K, the number of particles.

    Returns:
      A jitted function `(params, x [B, D], key_data uint32 [2]) -> (loss, grads)`, loss = NumPyro's
      loss divided by B (it sums over the data plate).
    """
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import RenyiELBO, Trace_ELBO

    if objective == "elbo":
        elbo = Trace_ELBO(num_particles=num_samples, vectorize_particles=True)
    else:
        elbo = RenyiELBO(alpha=0.0, num_particles=num_samples)

    def loss(params: Params, x: Any, key_data: Any) -> Any:
        key = jax.random.wrap_key_data(key_data, impl=KEY_IMPL)
        batch, latent = x.shape[0], params["loc"]["b"].shape[-1]

        def model(x: Any) -> None:
            with numpyro.plate("data", batch):
                z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([latent]).to_event(1))
                numpyro.sample("x", dist.Bernoulli(logits=decode(params, z)).to_event(1), obs=x)

        def guide(x: Any) -> None:
            loc, scale = encode(params, x)
            with numpyro.plate("data", batch):
                numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

        return elbo.loss(key, {}, model, guide, x) / batch

    return jax.jit(jax.value_and_grad(loss))


# ------------------------------------------------------------------------------ data
def load_batch(batch: int, data_dim: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """A fixed binary batch `float32 [B, D]` and a description of where it came from.

    MNIST only if it is already cached (`sources=()`, offline): the benchmark must never
    wait on, or fail by, a download.
    """
    if data_dim == 784:
        from vi_jax import data as vdata

        try:
            images = vdata.load_mnist("test", offline=True, sources=()).images[:batch]
        except (vdata.DataUnavailableError, OSError) as e:
            reason = f"not in the vi_jax.data cache ({type(e).__name__})"
        else:
            x = vdata.static_binarize(images.astype(np.float32) / 255.0, seed=seed)
            return x.astype(np.float32), f"MNIST test[:{batch}], static binarisation seed {seed}"
    else:
        reason = f"data_dim {data_dim} != 784"
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, data_dim)) < 0.5).astype(np.float32)
    return x, f"random Bernoulli(0.5) batch, seed {seed} (MNIST not used: {reason})"


# --------------------------------------------------------------------------- timing
def measure_case(
    steps: dict[str, Step],
    params: Params,
    x: Any,
    *,
    reps: int,
    target_s: float,
    max_inner: int,
    seed: int,
    bar: Any,
) -> dict[str, Any]:
    """Times the legs of one case side by side.

    Each leg is called once to compile (timed as `first_call_s`), once more to calibrate
    `inner`, the number of calls per timed repetition (the same for every leg, so that
    the faster one's repetition lasts about `target_s`), then `reps` repetitions of
    `inner` calls, alternating the legs (and which goes first) so that both see the same
    machine load. Every call gets a fresh key.

    Returns:
      `{"inner_calls": n, <leg>: {per-eval timing summary, evals_per_s, first_call_s,
      loss_mean, loss_se, ...}}`.
    """
    import jax

    def keys_for(leg: int, salt: int, n: int) -> list[Any]:
        raw = np.random.default_rng([seed, leg, salt]).integers(
            0, 2**32, (n, KEY_WORDS), dtype=np.uint32
        )
        return [jax.device_put(r) for r in raw]

    names = list(steps)
    first, single, cost, ceiling = {}, {}, {}, {}
    compiled: dict[str, Step] = {}
    # Alternate which leg compiles first from case to case: the first trace of a process
    # also pays one-off costs (lowering rules, caches) that should not land on one leg.
    for j, name in enumerate(names) if seed % 2 == 0 else reversed(list(enumerate(names))):
        k_first, k_single = keys_for(j, 1, 2)
        # First call = lower + compile + one run; the compiled program then serves every
        # timed call, and XLA's cost analysis of that same program gives its FLOPs.
        t0 = time.perf_counter()
        lowered = steps[name].lower(params, x, k_first)
        compiled[name] = lowered.compile()
        common.block(compiled[name](params, x, k_first))
        first[name] = time.perf_counter() - t0
        cost[name] = common.compiled_cost(compiled[name])
        ceiling[name] = common.dot_ceiling(steps[name], params, x, k_first)
        t0 = time.perf_counter()
        common.block(compiled[name](params, x, k_single))
        single[name] = time.perf_counter() - t0
    inner = int(min(max_inner, max(1, math.ceil(target_s / min(single.values())))))
    # Keys are made before timing, so that a timed call is the step function only; each
    # leg has its own keys, so that the two legs' loss means are independent.
    keys = {n: keys_for(j, 0, reps * inner) for j, n in enumerate(names)}
    times: dict[str, list[float]] = {n: [] for n in names}
    # Process CPU time of each repetition too: the legs run one at a time in this process,
    # so a repetition's CPU time is that leg's work, which other processes sharing the
    # cores inflate far less than its wall-clock time.
    cpu_times: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            step, ks = compiled[name], keys[name][r * inner : (r + 1) * inner]
            t0, c0 = time.perf_counter(), time.process_time()
            # Keep only the losses: an executable's outputs become ready when its run ends,
            # so waiting for every loss waits for every gradient too, without holding them.
            vals = [step(params, x, k)[0] for k in ks]
            common.block(vals)
            times[name].append((time.perf_counter() - t0) / inner)
            cpu_times[name].append((time.process_time() - c0) / inner)
            losses[name].extend(vals)
            bar.update(1)
    out: dict[str, Any] = {"inner_calls": inner}
    for name in names:
        s = common.summarize(times[name])
        v = np.asarray(jax.device_get(losses[name]), np.float64)
        s.update(
            {
                "evals_per_s": 1.0 / s["median_s"],
                # The rate at the 75th and 25th percentile of the per-eval time.
                "evals_per_s_q25": 1.0 / s["q75_s"],
                "evals_per_s_q75": 1.0 / s["q25_s"],
                "first_call_s": first[name],
                "flops_per_eval": cost[name]["flops"],
                "achieved_flops_per_s": cost[name]["flops"] / s["median_s"],
                # The shape-matched ceiling: this call's matmuls alone (common.dot_ceiling).
                "dot_ceiling": ceiling[name],
                "fraction_of_dot_ceiling": ceiling[name]["dot_s"] / s["median_s"],
                "times_s": times[name],
                "cpu_times_s": cpu_times[name],
                "cpu_median_s": float(np.median(cpu_times[name])),
                "loss_mean": float(v.mean()),
                "loss_se": float(v.std(ddof=1) / math.sqrt(len(v))),
                "n_evals": len(v),
            }
        )
        out[name] = s
    return out


def compare(case: dict[str, Any]) -> None:
    """Adds the speed ratio and the loss cross-check of the two legs to `case`, in place."""
    vj, npy = case["vi_jax"], case["numpyro"]
    case["ratio_vi_jax_over_numpyro"] = vj["evals_per_s"] / npy["evals_per_s"]
    # Ratio of the interleaved repetitions taken one pair at a time: robust to load drift.
    case["paired_ratio"] = common.paired_ratio(npy["times_s"], vj["times_s"])
    case["cpu_ratio_vi_jax_over_numpyro"] = npy["cpu_median_s"] / vj["cpu_median_s"]
    case["paired_cpu_ratio"] = common.paired_ratio(npy["cpu_times_s"], vj["cpu_times_s"])
    diff = vj["loss_mean"] - npy["loss_mean"]
    se = math.hypot(vj["loss_se"], npy["loss_se"])
    case["loss_diff"] = diff
    case["loss_diff_combined_se"] = se
    case["loss_diff_z"] = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(1e9, diff))
    case["losses_agree"] = bool(abs(diff) <= DISAGREE_SE * se)


# ---------------------------------------------------------------------- reporting
def plot(out: Any, cases: list[dict[str, Any]], legs: list[str], title: str) -> str:
    """Evals/s vs K per objective for each library (median, IQR bars), log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    all_ks = sorted({c["K"] for c in cases})
    fig, axes = plt.subplots(1, len(OBJECTIVES), figsize=(10, 4), sharex=True, sharey=True)
    for ax, objective in zip(axes, OBJECTIVES, strict=True):
        rows = [c for c in cases if c["objective"] == objective]
        for i, leg in enumerate(legs):
            ks = np.array([c["K"] for c in rows], float)
            rate = np.array([c[leg]["evals_per_s"] for c in rows])
            err = np.array(
                [
                    rate - [c[leg]["evals_per_s_q25"] for c in rows],
                    [c[leg]["evals_per_s_q75"] for c in rows] - rate,
                ]
            )
            ax.errorbar(ks, rate, yerr=err, fmt="o-", capsize=3, color=f"C{i}", label=LABELS[leg])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(all_ks, [str(k) for k in all_ks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("K (samples / particles)")
        ax.set_title(objective.upper())
    axes[0].set_ylabel("value-and-grad evals / s")
    axes[-1].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fname = f"{NAME}.png"
    fig.savefig(out / fname, dpi=100)
    plt.close(fig)
    return fname


def _table_row(case: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"objective": case["objective"], "K": case["K"]}
    row["calls/rep"] = case["inner_calls"]
    for leg in LEGS:
        lab = LABELS[leg]
        if leg in case:
            r = case[leg]
            row[f"{lab} evals/s"] = r["evals_per_s"]
            row[f"{lab} compile s"] = r["first_call_s"]
            if "fraction_of_peak" in r:
                row[f"{lab} GFLOP/s (% peak)"] = (
                    f"{r['achieved_flops_per_s'] / 1e9:.0f} ({100 * r['fraction_of_peak']:.0f}%)"
                )
            if "fraction_of_dot_ceiling" in r:
                row[f"{lab} % of its matmuls' speed"] = 100 * r["fraction_of_dot_ceiling"]
            row[f"{lab} mean loss ± se"] = f"{r['loss_mean']:.3f} ± {r['loss_se']:.3f}"
        else:
            for col in ("evals/s", "compile s", "mean loss ± se"):
                row[f"{lab} {col}"] = "skipped"
    if "ratio_vi_jax_over_numpyro" in case:
        p = case["paired_ratio"]
        row["ratio vi_jax/NumPyro"] = case["ratio_vi_jax_over_numpyro"]
        row["paired ratio IQR"] = f"{p['q25']:.3g}-{p['q75']:.3g}"
        pc = case["paired_cpu_ratio"]
        row["CPU-time ratio [paired IQR]"] = (
            f"{case['cpu_ratio_vi_jax_over_numpyro']:.3g} [{pc['q25']:.3g}-{pc['q75']:.3g}]"
        )
        row["loss diff / se"] = case["loss_diff_z"]
    return row


COLUMNS = [
    "objective",
    "K",
    "calls/rep",
    "vi_jax evals/s",
    "NumPyro evals/s",
    "ratio vi_jax/NumPyro",
    "paired ratio IQR",
    "CPU-time ratio [paired IQR]",
    "vi_jax GFLOP/s (% peak)",
    "NumPyro GFLOP/s (% peak)",
    "vi_jax % of its matmuls' speed",
    "NumPyro % of its matmuls' speed",
    "vi_jax compile s",
    "NumPyro compile s",
    "vi_jax mean loss ± se",
    "NumPyro mean loss ± se",
    "loss diff / se",
]


def pin_cpus(n: int, ap: argparse.ArgumentParser) -> None:
    """Restricts this process to its first `n` allowed CPUs; refused once JAX has started.

    XLA's CPU client sizes its thread pool from the CPUs the process may run on when the
    backend starts, so the affinity must be set before anything touches JAX.
    """
    import os
    import sys

    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= n <= len(allowed):
        ap.error(f"--cpus must be between 1 and {len(allowed)} here, got {n}")
    if "jax" in sys.modules:
        ap.error("--cpus must be set before JAX starts: run this benchmark on its own")
    os.sched_setaffinity(0, allowed[:n])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks throughput_numpyro", description=__doc__
    )
    ap.add_argument("--quick", action="store_true", help="784-64-8 model, batch 32, K in {1, 5}")
    ap.add_argument("--out", default=None, help="output folder")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per leg and case")
    ap.add_argument(
        "--cpus",
        type=int,
        default=None,
        help="pin the process to this many CPUs before JAX starts (XLA sizes its thread "
        "pool from them): separates the legs' work from how they use the threads",
    )
    args = ap.parse_args(argv)
    if args.cpus is not None:
        pin_cpus(args.cpus, ap)
    from tqdm.auto import tqdm

    cfg = dict(QUICK if args.quick else FULL)
    if args.reps is not None:
        if args.reps < 2:  # a standard error and an IQR need two or more
            ap.error(f"--reps must be >= 2, got {args.reps}")
        cfg["reps"] = args.reps
    out = common.out_dir(NAME, args.out)
    notes: list[str] = []
    steps_of: dict[str, Callable[[str, int], Step]] = {"vi_jax": make_vi_jax_step}
    skip_reason = None
    try:
        import numpyro  # noqa: F401
    except ImportError as e:
        skip_reason = f"NumPyro leg skipped: numpyro is not importable ({e})."
        print(skip_reason)
        notes.append(skip_reason + " Only vi_jax was timed; no ratio.")
    else:
        steps_of["numpyro"] = make_numpyro_step
    legs = list(steps_of)

    # The roofline: a large matmul in this process, before the cases and again after them
    # (the best of the two: the machine's load may change during the run).
    peak = common.peak_matmul_flops(n=cfg.get("peak_n"))
    params = init_params(0, cfg["data_dim"], cfg["hidden"], cfg["latent"])
    x_np, data_desc = load_batch(cfg["batch"], cfg["data_dim"])
    import jax.numpy as jnp

    x = jnp.asarray(x_np)
    # IWAE at K=1 is the ELBO, measured already (and RenyiELBO's default is K = 2).
    grid = [(o, k) for o in OBJECTIVES for k in cfg["ks"] if o == "elbo" or k >= 2]
    cases: list[dict[str, Any]] = []
    # --quick forces a chunk (its sizes are below the default's threshold) to test the path.
    forced = cfg.get("sample_chunks", {})
    chunks = {k: forced.get(k, chunk_of(k, cfg["batch"], cfg["data_dim"])) for k in cfg["ks"]}
    total = sum(len(legs) + 1 + (chunks[k] is not None) for _, k in grid) * cfg["reps"]
    with tqdm(total=total, desc=NAME, disable=None) as bar:
        for i, (objective, k) in enumerate(grid):
            bar.set_postfix_str(f"{objective} K={k}")
            steps = {leg: make(objective, k) for leg, make in steps_of.items()}
            if chunks[k] is not None:  # the A/B of the chunking, side by side
                steps["vi_jax"] = make_vi_jax_step(objective, k, chunk=chunks[k])
                steps[UNCHUNKED] = make_vi_jax_step(objective, k, chunk=None)
            steps[JAX_NOISE] = make_vi_jax_step(objective, k, chunk=chunks[k], noise="jax")
            case = {"objective": objective, "K": k}
            case.update(
                measure_case(
                    steps,
                    params,
                    x,
                    reps=cfg["reps"],
                    target_s=cfg["target_s"],
                    max_inner=cfg["max_inner"],
                    seed=i,
                    bar=bar,
                )
            )
            case["sample_chunk"] = chunks[k]
            if UNCHUNKED in case:
                case["chunk_ab_time_ratio"] = common.paired_ratio(
                    case["vi_jax"]["times_s"], case[UNCHUNKED]["times_s"]
                )
                # XLA's cost analysis counts the chunk loop's body once: the FLOPs of the
                # same arithmetic come from the leg without the loop.
                r, whole = case["vi_jax"], case[UNCHUNKED]
                r["flops_per_eval_analysed"] = r["flops_per_eval"]
                r["flops_per_eval"] = whole["flops_per_eval"]
                r["achieved_flops_per_s"] = r["flops_per_eval"] / r["median_s"]
            case["noise_ab_time_ratio"] = common.paired_ratio(
                case["vi_jax"]["times_s"], case[JAX_NOISE]["times_s"]
            )
            if "numpyro" in case:
                compare(case)
            cases.append(case)

    peak_after = common.peak_matmul_flops(n=cfg.get("peak_n"))
    if peak_after["flops_per_s"] > peak["flops_per_s"]:
        peak = peak_after
    for case in cases:
        for leg in [*legs, UNCHUNKED] if UNCHUNKED in case else legs:
            r = case[leg]
            r["fraction_of_peak"] = r["achieved_flops_per_s"] / peak["flops_per_s"]
    results: dict[str, Any] = {
        "cases": cases,
        "numpyro_available": skip_reason is None,
        "peak_matmul": peak,
    }
    if skip_reason is not None:
        results["numpyro_skip_reason"] = skip_reason
    else:
        ratios = [c["ratio_vi_jax_over_numpyro"] for c in cases]
        results["ratio_geometric_mean"] = float(np.exp(np.mean(np.log(ratios))))
        results["ratio_min"], results["ratio_max"] = float(min(ratios)), float(max(ratios))
        cpu = [c["cpu_ratio_vi_jax_over_numpyro"] for c in cases]
        results["cpu_ratio_geometric_mean"] = float(np.exp(np.mean(np.log(cpu))))
        results["cpu_ratio_min"] = float(min(cpu))
        results["all_losses_agree"] = all(c["losses_agree"] for c in cases)
        each = ", ".join(
            f"{c['objective']} K={c['K']}: {c['ratio_vi_jax_over_numpyro']:.2f}" for c in cases
        )
        notes.append(
            f"Speed ratio vi_jax / NumPyro (evals/s quotient; > 1: vi_jax faster): {each}; "
            f"geometric mean {results['ratio_geometric_mean']:.2f}."
        )
        each = ", ".join(
            f"{c['objective']} K={c['K']}: {c['cpu_ratio_vi_jax_over_numpyro']:.2f}" for c in cases
        )
        notes.append(
            "The same in process CPU time (NumPyro CPU s / vi_jax CPU s per call, medians; "
            f"robust to other processes on the cores): {each}; geometric mean "
            f"{results['cpu_ratio_geometric_mean']:.2f}."
        )
        bad = [c for c in cases if not c["losses_agree"]]
        if bad:
            notes.append(
                "WARNING: mean losses differ by more than "
                f"{DISAGREE_SE:g} combined standard errors in "
                + ", ".join(f"{c['objective']} K={c['K']} (z={c['loss_diff_z']:.1f})" for c in bad)
                + ": the two legs may not compute the same objective."
            )
        else:
            notes.append(
                f"Cross-check passed: in every case the two legs' mean losses (over "
                f"{cfg['reps']} x calls/rep fresh keys each) agree within {DISAGREE_SE:g} "
                "combined standard errors."
            )
    ab = [c for c in cases if "chunk_ab_time_ratio" in c]
    if ab:
        each = ", ".join(
            f"{c['objective']} K={c['K']} (chunks of {c['sample_chunk']}): "
            f"{c['chunk_ab_time_ratio']['median']:.3f} [{c['chunk_ab_time_ratio']['q25']:.3f}-"
            f"{c['chunk_ab_time_ratio']['q75']:.3f}]"
            for c in ab
        )
        notes.append(
            "Sample chunking A/B (vi_jax time / the same leg with the log joint on all K "
            f"samples at once, paired median [IQR]): {each}."
        )
    each = ", ".join(
        f"{c['objective']} K={c['K']}: {c['noise_ab_time_ratio']['median']:.3f} "
        f"[{c['noise_ab_time_ratio']['q25']:.3f}-{c['noise_ab_time_ratio']['q75']:.3f}]"
        for c in cases
    )
    notes.append(
        "Gaussian-noise A/B (vi_jax time / the same leg with q a plain "
        "distrax.MultivariateNormalDiag, noise from jax.random.normal; paired median [IQR]): "
        f"{each}."
    )
    notes += [
        "evals/s = 1 / median per-call time over the timed repetitions (one repetition = "
        "`calls/rep` back-to-back calls, then block_until_ready); the paired ratio IQR is "
        "that of NumPyro time / vi_jax time over the interleaved repetition pairs.",
        "compile s = the first call (trace + XLA compile + one run), excluded from evals/s.",
        "Loss = minus the per-example mean of the K-sample bound (NumPyro's loss / batch); "
        "parameters at their (PyTorch-default) initialisation, not trained.",
        f"Data: {data_desc}.",
        "IWAE at K=1 equals the ELBO, so iwae is run at K >= 2 only.",
        f"GFLOP/s = XLA's cost analysis of the compiled program (FLOPs per call) / median "
        f"time; % peak = of a {peak['n']}x{peak['n']} float32 matmul measured in this "
        f"process ({peak['flops_per_s'] / 1e9:.0f} GFLOP/s).",
        "% of its matmuls' speed = the call's dot_generals alone, replayed with the same "
        "shapes and layouts, each alone (`common.dot_ceiling`, the "
        "shape-matched ceiling), over the call's median time: the rest is elementwise work, "
        "reductions and sampling.",
    ]
    model = f"{cfg['data_dim']}-{cfg['hidden']}-{cfg['latent']}"
    title = f"VAE {model}, batch {cfg['batch']}: value_and_grad evals/s"
    fname = plot(out, cases, legs, title)
    settings = {
        "quick": args.quick,
        "model": f"VAE {model} ReLU / {cfg['latent']}-{cfg['hidden']}-{cfg['data_dim']}, "
        "Bernoulli likelihood, N(0, I) prior, diagonal Gaussian q (softplus scale)",
        "batch_size": cfg["batch"],
        "K": cfg["ks"],
        "objectives": list(OBJECTIVES),
        "reps": cfg["reps"],
        "target_rep_s": cfg["target_s"],
        "max_calls_per_rep": cfg["max_inner"],
        "data": data_desc,
        "vi_jax_estimators": {"elbo": "elbo_pathwise", "iwae": "iwae_pathwise"},
        "numpyro_objectives": {
            "elbo": "Trace_ELBO(num_particles=K, vectorize_particles=True)",
            "iwae": "RenyiELBO(alpha=0, num_particles=K) (particles vectorised by vmap)",
        },
        "numpyro_vectorize_particles": True,
        "disagree_threshold_se": DISAGREE_SE,
        "cpus": args.cpus,
    }
    table = common.markdown_table([_table_row(c) for c in cases], COLUMNS)
    common.publish(
        out,
        NAME,
        settings=settings,
        results=results,
        tables={"value_and_grad throughput": table},
        notes=notes,
        plots=[fname],
    )
    return results


if __name__ == "__main__":
    main()
