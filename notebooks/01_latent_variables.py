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
# 3. time exact chunked enumeration (`vj.estimators.enumerate_binary_log_marginal`) as D grows.

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
# Rows are eye colours, columns nationalities. Marginalising nationality out is a sum
# over each row: p(colour) = Σ_nationality p(colour, nationality).

# %%
table = np.asarray(vj.estimators.EYE_COLOUR_NATIONALITY_TABLE)
print("".ljust(8) + "".join(n.rjust(9) for n in vj.estimators.NATIONALITIES) + "    row sum")
for colour, row in zip(vj.estimators.EYE_COLOURS, table, strict=True):
    print(colour.ljust(8) + "".join(f"{v:9.2f}" for v in row) + f"    {row.sum():7.2f}")
print("column sums".ljust(8), np.round(table.sum(axis=0), 2))
print(f"total = {table.sum():.2f}")

# %% [markdown]
# The row sums are brown 0.19, blue 0.37, green 0.43: **total 0.99**. The slide quotes
# p(green) = 0.44 and a total of 1.00, which its own printed entries do not give. The
# table as printed is therefore not quite a distribution; dividing by its total fixes
# that (`vj.estimators.normalise_table`). The same marginal, computed in log space (a
# `logsumexp` instead of a sum, which is how it is done when the terms are tiny):

# %%
p_colour = table.sum(axis=1)
log_p_colour = vj.estimators.log_marginal_table(jnp.log(table), axis=1)
normalised = np.asarray(vj.estimators.normalise_table(table))
assert np.allclose(np.exp(log_p_colour), p_colour)
assert np.isclose(normalised.sum(), 1.0)
for c, raw, norm in zip(vj.estimators.EYE_COLOURS, p_colour, normalised.sum(axis=1), strict=True):
    print(f"p({c:5s}) = {raw:.2f} as printed,  {norm:.4f} after normalising")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
im = axes[0].imshow(normalised, cmap="Blues")
axes[0].set_xticks(range(3), vj.estimators.NATIONALITIES)
axes[0].set_yticks(range(3), vj.estimators.EYE_COLOURS)
axes[0].set_xlabel("nationality (summed out)")
axes[0].set_ylabel("eye colour")
axes[0].set_title("joint p(colour, nationality), normalised")
for (i, j), v in np.ndenumerate(normalised):
    axes[0].text(j, i, f"{v:.3f}", ha="center", va="center")
axes[1].bar(vj.estimators.EYE_COLOURS, p_colour, label="printed (sum 0.99)", alpha=0.6)
axes[1].bar(
    vj.estimators.EYE_COLOURS,
    normalised.sum(axis=1),
    label="normalised (sum 1)",
    fill=False,
    edgecolor="k",
)
axes[1].set_xlabel("eye colour")
axes[1].set_ylabel("marginal probability")
axes[1].set_title("p(colour) = row sums")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The 2^D blow-up
#
# With one categorical latent of 3 values the sum has 3 terms. With D binary latents
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
D_max = 20 if FULL else 16
timing_D = list(range(4, D_max + 1, 2))
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
# doubles with every extra latent, approaching the dashed 2^D line. Extrapolating, D = 40
# would take about 2^(40 − D_max) times the last measurement.

# %% [markdown]
# ## What we saw
#
# - Marginalising a latent variable is a sum over its values; the lecture's table gives
#   p(brown, blue, green) = 0.19, 0.37, 0.43, which total **0.99** (the slide's 0.44 and
#   1.00 do not follow from its own entries); normalising makes it a distribution.
# - For D binary latents the sum has 2^D terms, and exact enumeration — even chunked, in
#   bounded memory — takes time that doubles with each latent. This is why the next
#   notebooks *estimate* p(x) by sampling instead.
