# %% [markdown]
# # 11 — Tractability vs flexibility
#
# **What this notebook shows.**
# 1. On a banana-shaped target with known log Z, a diagonal Gaussian, a full-covariance
#    Gaussian and a normalising flow (RealNVP from `vi_jax.families`) are fitted with the
#    same budget of ELBO steps; their densities are drawn over the target.
# 2. KL(q ‖ p) = log Z − ELBO measures how much each family misses, with its Monte Carlo
#    standard error.
# 3. The price of flexibility: the time per sample (with its log q) of each family.

# %%
import math
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from vi_jax.estimators.gradients import elbo_pathwise
from vi_jax.families import make_family

FULL = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci") == "full"
STEPS = 3000 if FULL else 1500
EVAL_K = 20000 if FULL else 4000

# %% [markdown]
# ## 1. A target whose normaliser we know
# z1 ~ N(0, 1.5²) and z2 | z1 ~ N(0.4 (z1² − 2.25), 0.5²): a sheared Gaussian, so
# log Z = 0 exactly; we check it by quadrature on a grid.


# %%
def log_normal(x, s):
    return -0.5 * (x / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)


def log_p(z):
    return log_normal(z[..., 0], 1.5) + log_normal(z[..., 1] - 0.4 * (z[..., 0] ** 2 - 2.25), 0.5)


xs, ys = np.linspace(-6, 6, 400), np.linspace(-4, 12, 600)
grid = jnp.asarray(np.stack(np.meshgrid(xs, ys, indexing="ij"), -1), jnp.float32)
density = np.exp(np.asarray(log_p(grid), np.float64))
log_z = float(np.log(np.trapezoid(np.trapezoid(density, ys, axis=1), xs)))
print(f"log Z by quadrature: {log_z:.5f} (exact: 0)")

# %% [markdown]
# ## 2. Three families, the same budget
# Each family maps per-datum params to a distrax distribution; we free the params (and
# the flow's network weights) and run the same Adam steps on the 8-sample pathwise ELBO.


# %%
def fit(name):
    fam = make_family(name, 2, flow_steps=4, flow_hidden=32, rngs=0)
    graphdef, state = nnx.split(fam)
    theta = (state, fam.init_params(jnp.zeros((1, 2)), jnp.ones((1, 2))))
    opt = optax.adam(5e-3)

    def q_of(th):
        return nnx.merge(graphdef, th[0])(th[1])

    @jax.jit
    def run(th, key):
        def body(carry, k):
            th, s = carry
            g = jax.grad(lambda t: -jnp.sum(elbo_pathwise(k, log_p, q_of(t), 8)))(th)
            u, s = opt.update(g, s, th)
            return (optax.apply_updates(th, u), s), None

        return jax.lax.scan(body, (th, opt.init(th)), jax.random.split(key, STEPS))[0][0]

    return q_of(run(theta, jax.random.key(0)))


names = ["diag", "fullrank", "realnvp"]
qs = {n: fit(n) for n in names}
stats = {}
for n, q in qs.items():
    z, log_q = jax.jit(lambda k, q=q: q.sample_and_log_prob(seed=k, sample_shape=(EVAL_K,)))(
        jax.random.key(1)
    )
    log_w = np.asarray(log_p(z)[:, 0] - log_q[:, 0], np.float64)
    elbo, se = log_w.mean(), log_w.std(ddof=1) / math.sqrt(EVAL_K)
    stats[n] = (elbo, se, log_z - elbo)
    print(f"{n:9s} ELBO = {elbo:.3f} ± {se:.3f}   KL(q||p) = log Z - ELBO = {log_z - elbo:.3f}")

# %% [markdown]
# The printed KLs order the families; the ratio below says how much of the diagonal
# Gaussian's KL the full-covariance Gaussian and the flow leave.

# %%
for n in names[1:]:
    print(f"KL({n}) / KL(diag) = {stats[n][2] / stats['diag'][2]:.3f}")

# %% [markdown]
# ## 3. The densities over the target
# Filled: q's density; black lines: the target's contours.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
sub = grid[::4, ::4]
for ax, n in zip(axes, names, strict=True):
    dens = np.exp(np.asarray(jax.jit(qs[n].log_prob)(sub.reshape(-1, 1, 2)))).reshape(sub.shape[:2])
    ax.contourf(xs[::4], ys[::4], dens.T, levels=20, cmap="Blues")
    ax.contour(xs, ys, density.T, levels=6, colors="k", linewidths=0.6)
    ax.set_title(f"{n}: KL = {stats[n][2]:.3f}")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The price: time per sample (with its log q)
# One jitted call draws `EVAL_K` samples with their log densities; we time its second run.

# %%
for n, q in qs.items():
    f = jax.jit(lambda k, q=q: q.sample_and_log_prob(seed=k, sample_shape=(EVAL_K,)))
    jax.block_until_ready(f(jax.random.key(2)))
    t0 = time.perf_counter()
    jax.block_until_ready(f(jax.random.key(3)))
    print(f"{n:9s} {1e6 * (time.perf_counter() - t0) / EVAL_K:.2f} µs per sample")

# %% [markdown]
# ## Try this
# Replace `"realnvp"` in `names` by `"iaf"` or `"spline"`, or change `flow_steps`, and
# rerun: does the KL shrink with more steps, and how does the time per sample grow?
# Then swap the banana for a mixture of two well-separated Gaussians and look at which
# mode the diagonal Gaussian picks.
