"""`python -m benchmarks <name> [--quick] [--out DIR]` or `python -m benchmarks --all [--quick]`.

`python -m benchmarks gpu_suite [--quick]` runs the speed benchmarks and one IWAE-table
cell on a GPU in one command (not part of `--all`, which it would repeat).
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "training_speed": "benchmarks.training_speed",
    "estimator_quality": "benchmarks.estimator_quality",
    "throughput_numpyro": "benchmarks.throughput_numpyro",
    "iwae_table": "benchmarks.iwae_table",
    "families": "benchmarks.families",
    "evaluation": "benchmarks.evaluation",
    "bounds": "benchmarks.bounds",
    "discrete_estimators": "benchmarks.discrete_estimators",
}
# Suites run other benchmarks: callable by name, never by --all.
SUITES = {"gpu_suite": "benchmarks.gpu_suite"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:", ", ".join(BENCHMARKS), "| suites:", ", ".join(SUITES))
        return 0
    if argv[0] == "--all":
        rest = argv[1:]
        for name, mod in BENCHMARKS.items():
            sub = list(rest)
            if "--out" in sub:  # one sub-folder per benchmark
                i = sub.index("--out")
                sub[i + 1] = f"{sub[i + 1]}/{name}"
            importlib.import_module(mod).main(sub)
        return 0
    name = argv[0]
    if name in SUITES:
        importlib.import_module(SUITES[name]).main(argv[1:])
        return 0
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)} or --all")
        return 2
    importlib.import_module(BENCHMARKS[name]).main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
