# %% [markdown]
# # 02 — Monte Carlo: π from darts, and the 1/√n law
#
# **What this notebook shows.** Any expectation E_p[f(z)] can be estimated by averaging
# f over samples z_i ~ p. We estimate π by throwing darts at the unit square with
# `vj.mc_expectation`, look at the spread of many repeated estimates, and check that the
# standard error behaves as σ/√n: four times as many darts halve the error.

# %%
import os

import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import vi_jax as vj

FULL = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci") == "full"
REPEATS = 2000 if FULL else 400

# %% [markdown]
# ## Darts
# A dart u ~ Uniform([0,1]²) lands inside the quarter disc with probability π/4, so
# π = E[4 · 1{‖u‖ ≤ 1}].

# %%
square = distrax.Independent(distrax.Uniform(jnp.zeros(2), jnp.ones(2)), 1)


def four_times_inside(u):
    return 4.0 * (jnp.sum(u**2, axis=-1) <= 1.0)


est = vj.mc_expectation(jax.random.key(0), four_times_inside, square, 10_000)
print(f"π ≈ {float(est.mean):.4f} ± {float(est.stderr):.4f}  (true {np.pi:.4f})")

darts = np.asarray(square.sample(seed=jax.random.key(1), sample_shape=(1000,)))
inside = np.sum(darts**2, axis=1) <= 1
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(*darts[inside].T, s=4, label="inside")
ax.scatter(*darts[~inside].T, s=4, label="outside")
t = np.linspace(0, np.pi / 2, 100)
ax.plot(np.cos(t), np.sin(t), "k")
ax.set_aspect("equal")
ax.set_xlabel("u₁")
ax.set_ylabel("u₂")
ax.set_title(f"1000 darts: π ≈ {4 * inside.mean():.3f}")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# ## The estimator is a random variable
# Repeating the experiment `REPEATS` times (`num_repeats=`) gives a histogram of
# estimates centred on π, with a spread that matches the reported standard error.

# %%
ns = [100, 1000, 10_000]
fig, ax = plt.subplots(figsize=(6, 3.5))
for n in ns:
    rep = vj.mc_expectation(jax.random.key(n), four_times_inside, square, n, num_repeats=REPEATS)
    means = np.asarray(rep.mean)
    ax.hist(means, bins=40, density=True, alpha=0.5, label=f"n = {n}")
    print(
        f"n = {n:6d}: mean of estimates {means.mean():.4f}, "
        f"sd of estimates {means.std():.4f}, mean reported stderr {float(rep.stderr.mean()):.4f}"
    )
ax.axvline(np.pi, color="k", ls="--", label="π")
ax.set_xlabel("estimate of π")
ax.set_ylabel("density")
ax.set_title(f"{REPEATS} repeated Monte Carlo estimates")
ax.legend()
plt.show()

# %% [markdown]
# ## Standard error σ/√n
# σ² = Var[4·1{inside}] = 16 · (π/4)(1 − π/4). On a log-log plot the error is a line
# of slope −1/2: quadrupling n halves it.

# %%
n_grid = 4 ** np.arange(2, 9 if FULL else 8)
sigma = 4 * np.sqrt(np.pi / 4 * (1 - np.pi / 4))
empirical = []
for n in n_grid:
    rep = vj.mc_expectation(
        jax.random.key(int(n)),
        four_times_inside,
        square,
        int(n),
        num_repeats=REPEATS if n <= 4**6 else 100,
    )
    empirical.append(float(np.std(np.asarray(rep.mean))))
empirical = np.array(empirical)
for n, e in zip(n_grid, empirical, strict=True):
    print(f"n = {n:7d}: sd of estimates {e:.5f}, σ/√n = {sigma / np.sqrt(n):.5f}")
print("ratios of successive errors (4x samples):", np.round(empirical[:-1] / empirical[1:], 2))

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.loglog(n_grid, empirical, "o", label="sd of repeated estimates")
ax.loglog(n_grid, sigma / np.sqrt(n_grid), "k--", label="σ/√n")
ax.set_xlabel("number of darts n")
ax.set_ylabel("error of the π estimate")
ax.set_title("Monte Carlo error ∝ n^(-1/2)")
ax.legend()
plt.show()

# %% [markdown]
# ## What we saw
# - `vj.mc_expectation` estimates π from darts, with a standard error std(f)/√n.
# - Repeated estimates scatter around π (unbiased) with a spread equal to that error.
# - The error falls as σ/√n, a slope of −1/2 on a log-log plot: each factor 4 in samples
#   buys only a factor 2 in accuracy, whatever the dimension of z — what matters is σ,
#   which is what importance sampling (notebook 03) tries to shrink.
#
# ## Try this
# Estimate π/4 with f(u) = √(1 − u²) for one uniform u ∈ [0, 1] (the area under a
# quarter circle) instead of darts in the square. *Predict:* is its standard error at the
# same n larger or smaller? (Smaller: f takes values in [0, 1] smoothly, σ ≈ 0.22 instead
# of the darts' σ ≈ 0.41 for the 0/1 indicator, so it needs about (0.41/0.22)² ≈ 3.4 times fewer samples
# for the same error.)
