"""One registry of gradient estimators, keyed by (objective, name).

Each entry says what its estimator needs, so that the CLI choices and help,
`TrainConfig.validate`, the benchmarks and the docs are all generated from it. An
estimator registers once, at the bottom of its own module:

    registry.register(EstimatorSpec("iwae", "dreg", iwae_dreg, min_samples=1, ...))

and is found with `get_estimator("iwae", "dreg")`. `objective` names the bound that the
estimator's value estimates (and whose gradient it estimates): "elbo", "iwae", "renyi",
and whatever objectives later modules add.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from vi_jax.types import Estimator


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """A registered gradient estimator and what it needs.

    Attributes:
      objective: the bound it targets ("elbo", "iwae", "renyi", ...).
      name: its name within the objective ("pathwise", "dreg", ...).
      fn: `fn(key, log_joint, q, num_samples, **options) -> [*batch]` surrogate.
      min_samples: the smallest K it accepts.
      needs_reparam: whether it needs a reparameterised (continuous) q.
      discrete_ok: whether it works with a discrete q (Bernoulli, categorical).
      options: keyword options it takes (e.g. `("alpha",)`), set with `bind`.
      summary: one line for command-line help and the docs.
    """

    objective: str
    name: str
    fn: Callable[..., Any]
    min_samples: int = 1
    needs_reparam: bool = True
    discrete_ok: bool = False
    options: tuple[str, ...] = ()
    summary: str = ""

    @property
    def key(self) -> str:
        """`"objective/name"`, e.g. `"iwae/dreg"`."""
        return f"{self.objective}/{self.name}"

    def bind(self, **options: Any) -> Estimator:
        """The estimator with those of `options` that it takes bound (others ignored).

        Returns `fn` itself when none apply, so that `bind()` is identity-comparable.
        """
        taken = {k: v for k, v in options.items() if k in self.options}
        return functools.partial(self.fn, **taken) if taken else self.fn

    def check_num_samples(self, num_samples: int) -> None:
        """Raises ValueError if K is below `min_samples`."""
        if num_samples < self.min_samples:
            raise ValueError(
                f"`num_samples` must be >= {self.min_samples} for {self.key}, got {num_samples}."
            )


_REGISTRY: dict[tuple[str, str], EstimatorSpec] = {}


def register(spec: EstimatorSpec) -> EstimatorSpec:
    """Adds `spec` to the registry; raises ValueError on a duplicate (objective, name)."""
    if not isinstance(spec, EstimatorSpec):
        raise TypeError(f"`spec` must be an EstimatorSpec, got {type(spec).__name__}.")
    if not callable(spec.fn):
        raise TypeError(f"`spec.fn` of {spec.key} must be callable.")
    if not isinstance(spec.min_samples, int) or spec.min_samples < 1:
        raise ValueError(f"`spec.min_samples` of {spec.key} must be an int >= 1.")
    ident = (spec.objective, spec.name)
    if ident in _REGISTRY:
        raise ValueError(f"estimator {spec.key} is already registered.")
    _REGISTRY[ident] = spec
    return spec


def objectives() -> tuple[str, ...]:
    """The registered objectives, in registration order."""
    return tuple(dict.fromkeys(obj for obj, _ in _REGISTRY))


def estimators(objective: str | None = None) -> tuple[EstimatorSpec, ...]:
    """Every registered estimator (of one objective, if given), in registration order."""
    if objective is not None:
        _check_objective(objective)
    return tuple(s for s in _REGISTRY.values() if objective is None or s.objective == objective)


def get_estimator(objective: str, name: str) -> EstimatorSpec:
    """The spec registered as (objective, name).

    Raises:
      ValueError: naming the argument and the available choices.
    """
    _check_objective(objective)
    spec = _REGISTRY.get((objective, name))
    if spec is None:
        names = [s.name for s in estimators(objective)]
        raise ValueError(
            f"`estimator` {name!r} is not available for objective {objective!r}; "
            f"choose one of {names}."
        )
    return spec


def describe(objective: str | None = None) -> str:
    """A one-line-per-objective text of the choices, e.g. for `--estimator` help."""
    lines = []
    for obj in (objective,) if objective else objectives():
        names = "|".join(s.name for s in estimators(obj))
        lines.append(f"{obj}: {names}")
    return "; ".join(lines)


def _check_objective(objective: str) -> None:
    if objective not in objectives():
        raise ValueError(f"`objective` must be one of {list(objectives())}, got {objective!r}.")


__all__ = [
    "EstimatorSpec",
    "describe",
    "estimators",
    "get_estimator",
    "objectives",
    "register",
]
