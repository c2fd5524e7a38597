# %% [markdown]
# # 01 — Latent variables: marginalising a joint table, and why it blows up
#
# **What this notebook shows.** A latent-variable model is a joint distribution
# p(x, z); the evidence p(x) is obtained by *summing the latent out*. We
#
# 1. marginalise the lecture's eye-colour × nationality table by summation (and in log
#    space with `vj.estimators.log_marginal_table`), and see that the printed entries sum to
#    0.99, not the slide's 1.00;
# 2. count the terms of the same sum for D binary latents: 2^D;
# 3. time exact chunked enumeration (`vj.estimators.enumerate_binary_log_marginal`) as D grows, up
#    to the lecture's D = 20;
# 4. replace the sum by naive Monte Carlo (`vj.estimators.uniform_log_marginal`) and watch it fail.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import vi_jax as vj

SIZE = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci")
FULL = SIZE == "full"
print("notebook size:", SIZE)

# %% [markdown]
# ## 1. The joint table p(eye colour, nationality)
#
# Rows are eye colours, columns nationalities: the table exactly as the lecture's slide
# prints it. Marginalising nationality out is a sum over each row:
# p(colour) = Σ_nationality p(colour, nationality).

# %%
table = np.asarray(vj.estimators.EYE_COLOUR_NATIONALITY_TABLE)
assert table.shape == (3, 8)
print("".ljust(12) + "".join(n[:7].rjust(8) for n in vj.estimators.NATIONALITIES) + "   row sum")
for colour, row in zip(vj.estimators.EYE_COLOURS, table, strict=True):
    print(colour.ljust(12) + "".join(f"{v:8.2f}" for v in row) + f"   {row.sum():7.2f}")
print("column sum".ljust(12) + "".join(f"{v:8.2f}" for v in table.sum(axis=0)))
print(f"total = {table.sum():.2f}")
row_sums = table.sum(axis=1)
assert np.allclose(row_sums, [0.19, 0.37, 0.43]) and np.isclose(table.sum(), 0.99)

# %% [markdown]
# The printed row sums are brown 0.19, blue 0.37, green 0.43: **total 0.99**. The slide
# itself prints p(green) = 0.44 and a total of 1.00, which its own entries do not give
# (0.01 + 0.01 + 0.08 + 0.06 + 0.07 + 0.08 + 0.06 + 0.06 = 0.43). So the table as printed
# is not quite a distribution; dividing every entry by the total 0.99
# (`vj.estimators.normalise_table`) makes it one. One cell, (brown, Spanish), is 0.00: in log space
# it is −inf, zero mass, and the log-space sum (`vj.estimators.log_marginal_table`, a `logsumexp`,
# which is how such sums are done when the terms are tiny) handles it.

# %%
log_p_colour = vj.estimators.log_marginal_table(jnp.log(table), axis=1)
normalised = np.asarray(vj.estimators.normalise_table(table))
assert np.allclose(np.exp(log_p_colour), row_sums)
assert np.isclose(normalised.sum(), 1.0)
print("normalised table (each entry / 0.99):")
print("".ljust(12) + "".join(n[:7].rjust(8) for n in vj.estimators.NATIONALITIES) + "   row sum")
for colour, row in zip(vj.estimators.EYE_COLOURS, normalised, strict=True):
    print(colour.ljust(12) + "".join(f"{v:8.4f}" for v in row) + f"   {row.sum():7.4f}")
print()
for c, raw, norm in zip(vj.estimators.EYE_COLOURS, row_sums, normalised.sum(axis=1), strict=True):
    print(f"p({c:5s}) = {raw:.2f} as printed, {norm:.4f} normalised, change {norm - raw:+.4f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [2.2, 1]})
axes[0].imshow(table, cmap="Blues")
axes[0].set_xticks(
    range(len(vj.estimators.NATIONALITIES)), vj.estimators.NATIONALITIES, rotation=30
)
axes[0].set_yticks(range(3), vj.estimators.EYE_COLOURS)
axes[0].set_xlabel("nationality (summed out)")
axes[0].set_ylabel("eye colour")
axes[0].set_title("joint p(colour, nationality), as printed")
for (i, j), v in np.ndenumerate(table):
    axes[0].text(j, i, f"{v:.2f}", ha="center", va="center")
# The two marginals differ by at most 0.004: bars of both would look identical, so the
# second panel shows the difference itself.
axes[1].bar(vj.estimators.EYE_COLOURS, normalised.sum(axis=1) - row_sums, color="tab:orange")
axes[1].axhline(0, color="k", lw=0.8)
axes[1].set_ylabel("normalised − printed p(colour)")
axes[1].set_title("what normalising changes")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The 2^D blow-up
#
# With one categorical latent of 8 values (the nationality) the sum has 8 terms. With D binary latents
# z ∈ {0,1}^D it has 2^D terms: every configuration of every latent.

# %%
Ds = np.arange(1, 41)
fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.semilogy(Ds, 2.0**Ds)
for d, label in [(20, "D = 20: a million"), (30, "D = 30: a billion")]:
    ax.axvline(d, color="grey", ls=":")
    ax.text(d + 0.5, 2.0**d / 30, label)
ax.set_xlabel("number of binary latents D")
ax.set_ylabel("terms in the sum, 2^D")
ax.set_title("exact marginalisation: terms grow exponentially")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Timing exact enumeration
#
# `vj.estimators.enumerate_binary_log_marginal` generates the configurations `chunk_size` at a time
# from their integer indices and keeps a running logsumexp inside `lax.scan`, so memory
# stays bounded; *time* still doubles with each extra latent. The model is
# `vj.estimators.make_binary_latent_gaussian` (independent Bernoulli z, Gaussian x | z).

# %%
# D = 20 is the lecture's 2^20 ≈ a million terms; it takes well under a second here.
D_max = 24 if FULL else 20
# every 4th D at CI size: each D is a new compilation, and 2^4 = 16x per point still
# shows the doubling per latent against the dashed 2^D line
timing_D = list(range(4, D_max + 1, 2 if FULL else 4))
times, log_px = [], []
for D in timing_D:
    model = vj.estimators.make_binary_latent_gaussian(jax.random.key(D), data_dim=8, latent_dim=D)
    x, _ = model.sample(jax.random.key(100 + D), 1)
    f = jax.jit(
        lambda x, model=model, D=D: vj.estimators.enumerate_binary_log_marginal(
            model.log_joint_fn(x), D, batch_shape=(1,), chunk_size=4096
        )
    )
    f(x).block_until_ready()  # compile
    t0 = time.perf_counter()
    value = f(x).block_until_ready()
    times.append(time.perf_counter() - t0)
    log_px.append(float(value[0]))
    print(
        f"D = {D:2d}: 2^D = {2**D:>9,d} terms, log p(x) = {log_px[-1]:8.3f}, "
        f"{times[-1] * 1e3:8.2f} ms"
    )

# Check one small case against the materialised support.
D = 8
model = vj.estimators.make_binary_latent_gaussian(jax.random.key(D), data_dim=8, latent_dim=D)
x, _ = model.sample(jax.random.key(100 + D), 1)
direct = vj.enumerate_log_marginal(
    model.log_joint_fn(x), vj.estimators.binary_support(D), batch_shape=(1,)
)
chunked = vj.estimators.enumerate_binary_log_marginal(
    model.log_joint_fn(x), D, batch_shape=(1,), chunk_size=32
)
assert np.allclose(direct, chunked, rtol=1e-5), (direct, chunked)

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.semilogy(timing_D, times, "o-", label="measured")
ref = times[-1] * 2.0 ** (np.array(timing_D) - timing_D[-1])
ax.semilogy(timing_D, ref, "k--", label="∝ 2^D")
ax.set_xlabel("number of binary latents D")
ax.set_ylabel("wall time of exact log p(x) [s]")
ax.set_title("chunked exact enumeration")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# For small D the time is dominated by fixed overheads; once the chunks fill up it
# doubles with every extra latent, following the dashed 2^D line. The measured time at
# D = 20 (the lecture's 2^20, about a million terms) is printed above; the same doubling
# makes D = 40 take 2^20 times as long, as the next cell computes from the measurement.

# %%
per_term = times[-1] / 2.0 ** timing_D[-1]
for D in (30, 40, 60):
    seconds = per_term * 2.0**D
    print(f"D = {D}: {2.0**D:.1e} terms, about {seconds:.3g} s = {seconds / 86400:.3g} days")

# %% [markdown]
# ## 4. Naive Monte Carlo over the latents
#
# Instead of summing all 2^D terms we can *sample* z uniformly from {0,1}^D and use
# p(x) = |Z| · E_{z ~ U(Z)}[p(x, z)] ≈ |Z| · (1/n) Σ_k p(x, z_k), which is
# `vj.estimators.uniform_log_marginal`. It is unbiased, but when p(x, z) is concentrated on a few z
# most samples miss them. Below, D = 12 (exact answer by enumeration) and n grows.

# %%
D = 12
model = vj.estimators.make_binary_latent_gaussian(jax.random.key(D), data_dim=8, latent_dim=D)
x, _ = model.sample(jax.random.key(100 + D), 1)
exact = float(
    vj.estimators.enumerate_binary_log_marginal(model.log_joint_fn(x), D, batch_shape=(1,))[0]
)
support = vj.estimators.binary_support(D)
ns = [10, 100, 1000, 10000]
repeats = 20
log_joint = model.log_joint_fn(x)


def naive_estimates(n):
    """`repeats` independent naive-MC estimates of log p(x) with n samples each."""

    def one(key):
        return vj.estimators.uniform_log_marginal(key, log_joint, support, n, batch_shape=(1,))

    keys = jax.random.split(jax.random.key(n), repeats)
    return np.asarray(jax.jit(jax.vmap(lambda k: one(k).log_marginal[0]))(keys))


naive = np.stack([naive_estimates(n) for n in ns])
print(f"exact log p(x) = {exact:.3f} (2^{D} = {2**D} terms)")
for n, row in zip(ns, naive, strict=True):
    print(
        f"n = {n:5d}: naive MC log p-hat, median {np.median(row):8.3f}, "
        f"min {row.min():8.3f}, max {row.max():8.3f}"
    )
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for n, row in zip(ns, naive, strict=True):
    ax.plot(np.full(repeats, n), row, "o", alpha=0.4, color="tab:blue")
ax.axhline(exact, color="k", ls="--", label="exact (enumeration)")
ax.set_xscale("log")
ax.set_xlabel("samples n")
ax.set_ylabel("log p-hat(x)")
ax.set_title(f"naive Monte Carlo, {repeats} repeats per n")
ax.legend()
fig.tight_layout()
plt.show()
# The estimate of p(x) is unbiased, so log p-hat is (by Jensen) biased low: its median
# sits below the truth for small n and the spread shrinks as n grows.
assert np.median(naive[0]) < exact and np.ptp(naive[-1]) < np.ptp(naive[0])

# %% [markdown]
# With few samples the estimates scatter widely and mostly fall *below* the exact value
# (the sum is dominated by a few z that a small sample usually misses); with n
# approaching |Z| they converge. Notebook 03 shows how this gets worse with dimension,
# and how a better proposal than the uniform one fixes it.

# %% [markdown]
# ## What we saw
#
# - Marginalising a latent variable is a sum over its values; the lecture's table gives
#   p(brown, blue, green) = 0.19, 0.37, 0.43, which total **0.99** (the slide's 0.44 and
#   1.00 do not follow from its own entries); normalising makes it a distribution.
# - For D binary latents the sum has 2^D terms, and exact enumeration — even chunked, in
#   bounded memory — takes time that doubles with each latent: measured up to the
#   lecture's D = 20, and ~2^20 times that at D = 40.
# - Sampling z uniformly (naive Monte Carlo) replaces the sum by an average; it is
#   unbiased for p(x) but noisy and low in log space until n is large. The next notebooks
#   make sampling work.
#
# ## Try this
#
# 1. In section 1, compute p(nationality | eye colour = green) from the normalised table.
#    *Predict first:* is it the same as from the printed table? (It is: normalising
#    rescales a row and its sum by the same factor, so conditionals do not change.)
# 2. In section 4, set `D = 16`. *Predict:* with n = 100 does the median log p-hat move
#    closer to or further from the exact value than at D = 12? (Further: the same n now
#    covers a 16 times smaller fraction of the 2^D configurations.)
