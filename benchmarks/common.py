"""Shared helpers of the benchmarks: timing, environment recording, result writing."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_ROOT = Path(__file__).resolve().parent / "results"


def block(x: Any) -> Any:
    """Waits for every array of a pytree (`jax.block_until_ready`)."""
    import jax

    return jax.block_until_ready(x)


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, IQR (q75 - q25), min, max and count of repeated timings in seconds."""
    t = np.asarray(times, float)
    q25, med, q75 = np.percentile(t, [25, 50, 75])
    return {
        "median_s": float(med),
        "iqr_s": float(q75 - q25),
        "q25_s": float(q25),
        "q75_s": float(q75),
        "min_s": float(t.min()),
        "max_s": float(t.max()),
        "reps": len(t),
    }


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Median and quartiles of `numerator[i] / denominator[i]` over interleaved repetitions.

    Ratios taken one pair at a time are robust to load that drifts over a run. Both
    sequences must be non-empty and of one length.
    """
    r = np.asarray(numerator, float) / np.asarray(denominator, float)
    q25, med, q75 = np.percentile(r, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75)}


def time_repeated(
    fn: Callable[[int], Any], reps: int, *, warmup: int = 1, progress: Any = None
) -> dict[str, Any]:
    """Times `fn(i)` (which must block) `warmup + reps` times.

    The first `warmup` calls (compilation) are timed separately as `compile_s` and
    excluded from the summary of the remaining `reps` calls.
    """
    compile_times, times = [], []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        block(fn(i))
        dt = time.perf_counter() - t0
        (compile_times if i < warmup else times).append(dt)
        if progress is not None:
            progress.update(1)
    out = summarize(times)
    out["compile_s"] = float(sum(compile_times))
    out["times_s"] = [float(t) for t in times]
    return out


def environment() -> dict[str, Any]:
    """Device, library versions and host facts, recorded with every result."""
    import importlib.metadata as md

    import jax

    dev = jax.devices()[0]
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "distrax", "numpy", "numpyro", "torch"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "platform": dev.platform,
        "device": getattr(dev, "device_kind", str(dev)),
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "x64": bool(jax.config.read("jax_enable_x64")),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # Other users share small machines: the load beside every figure says how quiet.
        "load_average": load_average(),
    }


def out_dir(name: str, out: str | os.PathLike[str] | None) -> Path:
    """`out`, or `benchmarks/results/<date>-<name>/`; created."""
    if out is None:
        date = datetime.date.today().isoformat()
        path = RESULTS_ROOT / f"{date}-{name}"
    else:
        path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of `rows` (dicts) restricted to `columns`."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_results(
    path: Path,
    name: str,
    *,
    settings: dict[str, Any],
    results: Any,
    tables: dict[str, str],
    notes: Sequence[str] = (),
    plots: Sequence[str] = (),
    append_summary: bool = False,
) -> None:
    """Writes `<name>.json`, `<name>.md` and `results.md` (summary) under `path`."""
    env = environment()
    payload = {"benchmark": name, "environment": env, "settings": settings, "results": results}
    (path / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float))
    md = [f"# {name}", ""]
    libs = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v is not None)
    md.append(
        f"Device: {env['platform']} ({env['device']}), CPUs: {env['cpu_count']}; "
        f"{libs}; {env['utc']}; load average {env['load_average']}"
    )
    md += ["", "Settings: `" + json.dumps(settings, default=str) + "`", ""]
    for title, table in tables.items():
        md += [f"## {title}", "", table, ""]
    for p in plots:
        md += [f"![{p}]({p})", ""]
    md += [f"- {n}" for n in notes]
    text = "\n".join(md) + "\n"
    (path / f"{name}.md").write_text(text)
    with open(path / "results.md", "a" if append_summary else "w") as f:
        f.write(text + "\n")


def publish(
    path: Path,
    name: str,
    *,
    settings: dict[str, Any],
    results: Any,
    tables: dict[str, str],
    notes: Sequence[str] = (),
    plots: Sequence[str] = (),
) -> None:
    """`write_results`, then prints the tables, the notes and where the files went."""
    write_results(
        path, name, settings=settings, results=results, tables=tables, notes=notes, plots=plots
    )
    for table in tables.values():
        print(table)
    for n in notes:
        print(n)
    print(f"results in {path}")


# ------------------------------------------------------------------------- roofline
def compiled_cost(jitted: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
    """FLOPs and memory of one call of `jitted(*args)`, from XLA's analyses of the program.

    `jitted` is a `jax.jit` function (lowered and compiled here for `args`) or an already
    compiled `jax.stages.Compiled` (then no `args`).

    `flops` is XLA's cost analysis (`lower(...).compile().cost_analysis()`); note that it
    counts the body of a `while`/`scan` loop once, whatever its trip count, so time a
    loop's body (a step, a chunk) and multiply. `memory_bytes` is the compiled program's
    footprint: arguments + outputs + temporaries - aliased buffers (`memory_analysis()`).

    Returns:
      `{"flops", "bytes_accessed", "memory_bytes", "temp_bytes"}` (NaN where XLA gives none).
    """
    if hasattr(jitted, "cost_analysis"):
        compiled = jitted
    else:
        compiled = jitted.lower(*args, **kwargs).compile()
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):  # older jax: one dict per computation
        ca = ca[0] if ca else {}
    ca = ca or {}
    out = {
        "flops": float(ca.get("flops", float("nan"))),
        "bytes_accessed": float(ca.get("bytes accessed", float("nan"))),
    }
    try:
        m = compiled.memory_analysis()
        out["memory_bytes"] = float(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
        out["temp_bytes"] = float(m.temp_size_in_bytes)
    except Exception:  # some backends give no memory analysis
        out["memory_bytes"] = out["temp_bytes"] = float("nan")
    return out


def peak_matmul_flops(n: int | None = None, reps: int = 7) -> dict[str, float]:
    """This machine's measured peak: FLOP/s of a jitted float32 `n x n` matmul, in-process.

    The roofline against which the benchmarks state their achieved FLOP/s as a fraction.
    `n` defaults to 1024 on a CPU and 8192 on an accelerator (large enough to saturate it).
    The best of `reps` timed runs (after a compiling one) is taken: a peak, not a typical.

    Returns:
      `{"n", "flops_per_s", "median_flops_per_s"}`.
    """
    import jax
    import jax.numpy as jnp

    if n is None:
        n = 1024 if jax.devices()[0].platform == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    block(mm(a, b))
    inner = max(1, int(2e9 // (2 * n**3)) if jax.devices()[0].platform == "cpu" else 20)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        block([mm(a, b) for _ in range(inner)])
        times.append((time.perf_counter() - t0) / inner)
    flops = 2.0 * n**3
    return {
        "n": n,
        "flops_per_s": flops / min(times),
        "median_flops_per_s": flops / float(np.median(times)),
    }


def roofline(flops_per_call: float, seconds_per_call: float, peak: dict[str, float]) -> dict:
    """Achieved FLOP/s of a timed call and its fraction of `peak` (`peak_matmul_flops`)."""
    achieved = flops_per_call / seconds_per_call
    return {
        "flops_per_call": flops_per_call,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak["flops_per_s"],
        "fraction_of_peak": achieved / peak["flops_per_s"],
    }


def _dot_eqns(jaxpr: Any, times: int = 1) -> list[tuple[Any, int]]:
    """`(dot_general equation, times it runs)` in `jaxpr` and every jaxpr nested in it.

    A `scan` body counts `length` times; a `while` body once (its trip count is not
    static: analyse a loop's body, as with `compiled_cost`); of a `cond`'s branches, the
    one with the most dot FLOPs (the branch a healthy step takes: the update, not the skip).
    """
    from jax.extend import core as jex_core

    found: list[tuple[Any, int]] = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((eqn, times))
            continue
        reps = times * int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else times
        subs = []
        for value in eqn.params.values():
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(v, jex_core.ClosedJaxpr):
                    subs.append(v.jaxpr)
                elif isinstance(v, jex_core.Jaxpr):
                    subs.append(v)
        if eqn.primitive.name == "cond":
            branches = [_dot_eqns(b, reps) for b in subs]
            found += max(branches, key=lambda b: sum(_dot_flops(e) * n for e, n in b), default=[])
        else:
            for sub in subs:
                found += _dot_eqns(sub, reps)
    return found


def _dot_flops(eqn: Any) -> float:
    """2 * (batch * free * contracted) sizes of one dot_general equation."""
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    (lc, rc), (lb, _) = eqn.params["dimension_numbers"]
    contracted = math.prod(lhs[d] for d in lc)
    batch = math.prod(lhs[d] for d in lb)
    lhs_free = math.prod(lhs) // (contracted * batch)
    rhs_free = math.prod(rhs) // (contracted * batch)
    return 2.0 * batch * lhs_free * rhs_free * contracted


def dot_ceiling(
    fn: Any, *args: Any, reps: int = 5, target_s: float = 0.05, max_runs: int = 1000
) -> dict[str, float]:
    """The speed `fn`'s own matrix products allow: each of them alone, timed here.

    A large square matmul (`peak_matmul_flops`) is the machine's peak, but a VAE step's
    products are `[128, 784] x [784, 400]`-sized and run below it; this is the
    shape-matched ceiling. Every `dot_general` of `jax.make_jaxpr(fn)(*args)` (nested
    jaxprs included, see `_dot_eqns`) is replayed with the same shapes, dtypes and
    dimension numbers (so the same transposed layouts as the backward pass) on random
    operands: each distinct product in its own program (a program of all the products
    would run independent large ones at once, competing for the cores, where `fn` runs
    them one after another), run `R` times in a loop into one reused output buffer (so
    that neither the dispatch of a small product nor the first touch of a large output
    counts, as in a compiled program), the best of `reps` timings after a compiling
    call, divided by `R`. The sum over the products (times how often each runs) is the ceiling
    time: `fn`'s time over it is how near its matmuls' own speed `fn` runs; the rest is
    elementwise work, reductions and overheads.

    Args:
      fn: the function whose products to replay (a step, one chunk), as timed.
      *args: example arguments of `fn` (only their shapes and dtypes are used).
      reps: timed repetitions per product.
      target_s: about how long one timed repetition of a product's program runs.
      max_runs: most runs `R` per timing (at least 2; about `target_s` seconds' worth).

    Returns:
      `{"num_dots", "dot_flops", "dot_s", "dot_flops_per_s", "products"}` (per call of
      `fn`); `products` lists each distinct product's shapes, count and seconds.
    """
    import jax
    import jax.numpy as jnp

    eqns = _dot_eqns(jax.make_jaxpr(fn)(*args).jaxpr)
    groups: dict[Any, dict[str, Any]] = {}
    for eqn, n in eqns:
        lhs, rhs = (v.aval for v in eqn.invars)
        sig = (
            lhs.shape, str(lhs.dtype), rhs.shape, str(rhs.dtype),
            str(eqn.params["dimension_numbers"]), str(eqn.params.get("preferred_element_type")),
        )  # fmt: skip
        g = groups.setdefault(sig, {"eqn": eqn, "count": 0, "flops": _dot_flops(eqn)})
        g["count"] += n
    rng = np.random.default_rng(0)
    total_s, products = 0.0, []
    for g in groups.values():
        eqn = g["eqn"]
        avals = [v.aval for v in eqn.invars]
        dims, pref = eqn.params["dimension_numbers"], eqn.params.get("preferred_element_type")
        operands = tuple(jnp.asarray(rng.standard_normal(a.shape), a.dtype) for a in avals)

        def replay(lhs, rhs, times, dims=dims, pref=pref):
            # The barrier keeps the loop-invariant product inside the loop: `times` runs,
            # one after another, into one reused output buffer (as in a compiled step).
            def body(_, carry):
                lhs, rhs, _ = jax.lax.optimization_barrier(carry)
                return lhs, rhs, jax.lax.dot_general(lhs, rhs, dims, preferred_element_type=pref)

            out = jax.eval_shape(
                lambda a, b: jax.lax.dot_general(a, b, dims, preferred_element_type=pref),
                lhs,
                rhs,
            )
            init = (lhs, rhs, jnp.zeros(out.shape, out.dtype))
            return jax.lax.fori_loop(0, times, body, init)[2]

        run = jax.jit(replay)
        block(run(*operands, 1))
        t0 = time.perf_counter()
        block(run(*operands, 1))
        # Enough runs per call that neither dispatch nor the first touch of the buffer counts.
        times = int(min(max_runs, max(2, target_s / max(time.perf_counter() - t0, 1e-7))))
        timings = []
        for _ in range(reps):
            t0 = time.perf_counter()
            block(run(*operands, times))
            timings.append((time.perf_counter() - t0) / times)
        each_s = min(timings)
        total_s += each_s * g["count"]
        products.append(
            {
                "lhs": list(avals[0].shape),
                "rhs": list(avals[1].shape),
                "count": g["count"],
                "seconds_each": each_s,
                "flops_per_s": g["flops"] / each_s,
            }
        )
    flops = float(sum(_dot_flops(e) * n for e, n in eqns))
    return {
        "num_dots": int(sum(n for _, n in eqns)),
        "dot_flops": flops,
        "dot_s": total_s,
        "dot_flops_per_s": flops / total_s if total_s > 0 else float("nan"),
        "products": products,
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (`uptime`), recorded beside every timing."""
    try:
        return [float(v) for v in os.getloadavg()]
    except OSError:
        return None
