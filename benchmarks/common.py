"""Shared helpers of the benchmarks: timing, environment recording, result writing."""

from __future__ import annotations

import datetime
import json
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
        f"{libs}; {env['utc']}"
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
