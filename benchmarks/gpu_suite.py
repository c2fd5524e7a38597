"""One command for the first GPU: every speed figure of `benchmarks/README.md`, in <= 8 minutes.

    python -m benchmarks gpu_suite [--quick] [--out DIR] [--wheels DIR] [--budget-s S]
                                   [--parts training_speed,throughput_numpyro,...]

Runs, in one process and in this order, each writing to `<out>/<part>/`:

1. `training_speed`: vi_jax trainer vs hand-written JAX `lax.scan` epoch vs the PyTorch
   `examples/vae` loop on the same GPU (default model, batch 128), and the IWAE-paper
   model at batch 20 (vi_jax vs hand-written);
2. `throughput_numpyro`: ELBO / IWAE value-and-gradient evals/s, vi_jax vs NumPyro;
3. `evaluation`: K = 5000 importance-sampled log p(x), images/s and memory, vi_jax vs a
   hand-written evaluator;
4. `iwae_cell`: `--cell-passes` passes (default 5) of one IWAE-table cell (`--cell`,
   default `iwae-k50`, the most expensive), timed per pass from its `metrics.jsonl`, and
   extrapolated to the full 3280-pass schedule (the median pass after the first, x 3280).

`<out>/gpu_suite.md` / `.json` then collect the headline figures with the device name.
A part that would start after `--budget-s` (default 480 s) is skipped with a note, so the
suite ends in time even on a slower device.

A GPU machine may lack distrax (and its dependency tfp-nightly). Carry the wheels in a
folder, downloaded on any machine with the registry:

    pip download distrax==0.1.9 tfp-nightly dm-tree gast cloudpickle decorator --no-deps -d wheels/
    # dm-tree has binary wheels: for another platform add
    #   --platform manylinux2014_x86_64 --python-version 3.11 --only-binary=:all:

and give `--wheels wheels/`: when `import distrax` fails, the suite first runs
`python -m pip install --no-index --find-links wheels/ distrax` (nothing is fetched from
the network). JAX's GPU memory preallocation is switched off (`XLA_PYTHON_CLIENT_PREALLOCATE
=false`, unless set) so that the PyTorch leg can share the device.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAME = "gpu_suite"
PARTS = ("training_speed", "throughput_numpyro", "evaluation", "iwae_cell")
FULL_PASSES = 3280


def install_command(wheels: str | os.PathLike[str]) -> list[str]:
    """The offline `pip install` of distrax from a folder of wheels."""
    return [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels)]


def ensure_distrax(wheels: str | None) -> str:
    """Imports distrax, installing it from `wheels` first if needed; returns what happened."""
    try:
        import distrax  # noqa: F401

        return "distrax importable"
    except ImportError as e:
        if wheels is None:
            raise SystemExit(
                f"vi-jax: error: distrax is not importable ({e}); give `--wheels DIR` with "
                "wheels from `pip download distrax==0.1.9 tfp-nightly dm-tree gast "
                "cloudpickle decorator --no-deps -d DIR`."
            ) from e
    cmd = [*install_command(wheels), "distrax"]
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()
    import distrax  # noqa: F401, F811

    return "installed from " + " ".join(cmd[1:])


def extrapolate_passes(pass_times: list[float], full: int = FULL_PASSES) -> dict[str, float]:
    """Full-schedule time from the timed passes: median pass after the first (compile), x `full`.

    Args:
      pass_times: seconds of each pass, in order (the first includes compilation).
      full: passes of the full schedule.

    Returns:
      `{"passes_timed", "first_pass_s", "median_pass_s", "full_schedule_s"}`.
    """
    if not pass_times:
        raise ValueError("`pass_times` must hold at least one pass.")
    steady = sorted(pass_times[1:] or pass_times)
    mid = len(steady) // 2
    median = steady[mid] if len(steady) % 2 else 0.5 * (steady[mid - 1] + steady[mid])
    return {
        "passes_timed": len(pass_times),
        "first_pass_s": float(pass_times[0]),
        "median_pass_s": float(median),
        "full_schedule_s": float(pass_times[0] + median * (full - 1)),
    }


def _iwae_cell(out: Path, cell: str, passes: int, quick: bool) -> dict[str, Any]:
    from benchmarks import iwae_table

    argv = ["--cell", cell, "--passes", str(passes), "--out", str(out), "--no-progress"]
    argv += ["--force"]  # always train: the timings are the point
    if quick:
        argv += ["--quick"]
    else:  # the pass timings are the point: a small test evaluation
        argv += ["--eval-examples", "500", "--eval-samples", "5000"]
    iwae_table.main(argv)
    lines = (out / cell / "metrics.jsonl").read_text().splitlines()
    times = [float(json.loads(line)["time_s"]) for line in lines if "time_s" in json.loads(line)]
    res = extrapolate_passes(times)
    res["cell"] = cell
    return res


def _headline(part: str, res: dict[str, Any]) -> list[str]:
    """The figures of one part worth a line of the summary."""
    if part == "training_speed":
        lines = []
        for key, label in (("", "default"), ("iwae_model", "iwae batch 20")):
            r = res if not key else res.get(key)
            if not r:
                continue
            line = (
                f"training_speed {label}: vi_jax {r['vi_jax']['median_s']:.4g} s/epoch, "
                f"hand-written {r['hand-written JAX']['median_s']:.4g} s/epoch, ratio "
                f"{r['ratio_vi_jax_over_handwritten']:.3f}; first epoch ratio "
                f"{r['first_epoch_ratio']:.2f}; vi_jax "
                f"{100 * r['vi_jax'].get('fraction_of_peak', float('nan')):.0f}% of peak"
            )
            if "PyTorch examples/vae" in r:
                t = r["PyTorch examples/vae"]["median_s"]
                line += f"; PyTorch {t:.4g} s/epoch = {t / r['vi_jax']['median_s']:.1f}x vi_jax"
            lines.append(line)
        return lines
    if part == "throughput_numpyro":
        if "ratio_geometric_mean" not in res:
            return ["throughput_numpyro: NumPyro leg skipped"]
        each = ", ".join(
            f"{c['objective']} K={c['K']} {c['ratio_vi_jax_over_numpyro']:.2f}"
            for c in res["cases"]
        )
        return [
            f"throughput_numpyro: vi_jax / NumPyro geometric mean "
            f"{res['ratio_geometric_mean']:.2f} ({each}); losses agree: {res['all_losses_agree']}"
        ]
    if part == "evaluation":
        vj = res["legs"]["vi_jax"]
        return [
            f"evaluation: vi_jax {vj['images_per_s']:.4g} images/s "
            f"({100 * vj['fraction_of_peak']:.0f}% of peak), time ratio to hand-written "
            f"{res['ratio_vi_jax_over_handwritten_time']:.3f}; 10,000 images "
            f"{vj['full_test_set_s']:.4g} s"
        ]
    return [
        f"iwae_cell {res['cell']}: {res['passes_timed']} passes, median pass "
        f"{res['median_pass_s']:.3g} s (first {res['first_pass_s']:.3g} s): full "
        f"{FULL_PASSES}-pass schedule ~{res['full_schedule_s'] / 60:.1f} min"
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks gpu_suite", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="every part at its --quick size")
    ap.add_argument("--out", default=None, help="output folder")
    ap.add_argument("--wheels", default=None, help="folder of wheels to install distrax from")
    ap.add_argument("--budget-s", type=float, default=480.0, help="skip parts started later")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    ap.add_argument("--cell", default="iwae-k50", help="IWAE-table cell to time")
    ap.add_argument("--cell-passes", type=int, default=None, help="passes of that cell")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        ap.error(f"unknown --parts {bad}; choose from {', '.join(PARTS)}")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    t_start = time.perf_counter()
    distrax_note = ensure_distrax(args.wheels)

    from benchmarks import common

    out = common.out_dir(NAME, args.out)
    env = common.environment()
    print(f"gpu_suite on {env['platform']} ({env['device']}); {distrax_note}")
    quick = ["--quick"] if args.quick else []
    results: dict[str, Any] = {"device": env["device"], "platform": env["platform"], "parts": {}}
    notes = [f"Device: {env['platform']} ({env['device']}); {distrax_note}."]
    headlines: list[str] = []
    for part in parts:
        elapsed = time.perf_counter() - t_start
        if elapsed > args.budget_s:
            msg = f"{part} skipped: {elapsed:.0f} s elapsed > budget {args.budget_s:.0f} s."
            print(msg)
            notes.append(msg)
            continue
        t0 = time.perf_counter()
        sub = str(out / part)
        if part == "iwae_cell":
            cell = "vae-k1" if args.quick else args.cell
            passes = args.cell_passes or (2 if args.quick else 5)
            res = _iwae_cell(out / part, cell, passes, args.quick)
        else:
            extra = ["--torch-epochs", "3"] if part == "training_speed" and not args.quick else []
            res = importlib.import_module(f"benchmarks.{part}").main([*quick, "--out", sub, *extra])
        results["parts"][part] = {"wall_s": time.perf_counter() - t0}
        headlines += _headline(part, res)
        if part == "iwae_cell":
            results["parts"][part].update(res)
    results["total_wall_s"] = time.perf_counter() - t_start
    results["headlines"] = headlines
    notes.append(f"Total wall time {results['total_wall_s']:.0f} s.")
    rows = [{"part": p, "wall s": r["wall_s"]} for p, r in results["parts"].items()]
    common.write_results(
        out,
        NAME,
        settings={"quick": args.quick, "parts": parts, "budget_s": args.budget_s},
        results=results,
        tables={"Parts": common.markdown_table(rows, ["part", "wall s"])},
        notes=headlines + notes,
    )
    for line in headlines + notes:
        print(line)
    print(f"results in {out}")
    return results


if __name__ == "__main__":
    main()
