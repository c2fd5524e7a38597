"""Statistical assertions shared by the tests: tolerances come from standard errors."""

from __future__ import annotations

import jax
import numpy as np


def flat(tree) -> np.ndarray:
    """Concatenates a pytree of arrays with a leading sample axis into [N, P]."""
    leaves = jax.tree_util.tree_leaves(tree)
    n = np.shape(leaves[0])[0]
    return np.concatenate([np.reshape(np.asarray(x, np.float64), (n, -1)) for x in leaves], 1)


def mean_and_stderr(samples, axis: int = 0):
    s = np.asarray(samples, np.float64)
    n = s.shape[axis]
    return s.mean(axis), s.std(axis, ddof=1) / np.sqrt(n)


def assert_unbiased(samples, truth, num_se: float = 4.0, what: str = "estimate") -> None:
    """|mean - truth| < num_se * stderr, elementwise (samples have a leading [N] axis)."""
    mean, se = mean_and_stderr(samples)
    truth = np.asarray(truth, np.float64)
    err = np.abs(mean - truth)
    # a tiny absolute floor covers components whose estimator has zero variance.
    ok = err <= num_se * se + 1e-6 * (1 + np.abs(truth))
    if not np.all(ok):
        raise AssertionError(
            f"{what}: biased beyond {num_se} standard errors:\nmean={mean}\ntruth={truth}\n"
            f"stderr={se}\nz={err / np.maximum(se, 1e-30)}"
        )


def total_variance(samples) -> tuple[float, float]:
    """Trace of the covariance of [N, P] samples, with its standard error."""
    g = np.asarray(samples, np.float64).reshape(np.shape(samples)[0], -1)
    n = g.shape[0]
    u = np.sum((g - g.mean(0)) ** 2, axis=1) * n / (n - 1)
    return float(u.mean()), float(u.std(ddof=1) / np.sqrt(n))


def assert_variance_less(small, large, num_se: float = 4.0, what: str = "") -> tuple[float, float]:
    """Total variance of `small` below that of `large` by more than num_se combined stderrs."""
    v1, s1 = total_variance(small)
    v2, s2 = total_variance(large)
    if not v2 - v1 > num_se * np.hypot(s1, s2):
        raise AssertionError(f"{what}: variance {v1:.4g}±{s1:.2g} not below {v2:.4g}±{s2:.2g}")
    return v1, v2
