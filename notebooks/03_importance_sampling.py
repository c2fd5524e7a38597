# %% [markdown]
# # 03 — Importance sampling for log p(x), and its warning lights
#
# **What this notebook shows.** The evidence p(x) = ∫ p(x, z) dz is an expectation under
# *any* distribution q that covers the posterior: p(x) = E_q[p(x, z) / q(z)]. We compare
#
# - **uniform Monte Carlo** (`vj.estimators.uniform_log_marginal`, q uniform on a box), and
# - **importance sampling** (`vj.importance_log_marginal`) with q the prior, and with q a
#   widened version of the exact posterior — an *oracle*: it uses p(z | x), which in a
#   real problem is what we do not have; it shows what a q close to the posterior buys
#   (variational inference, notebook 04 onwards, is how one finds such a q),
#
# on `vj.make_linear_gaussian`, whose log p(x) is known exactly, as the latent dimension
# grows. Then we read two diagnostics of the importance weights: the effective sample
# size (`vj.effective_sample_size`) and the Pareto k̂ (`vj.pareto_khat`).

# %%
import os

import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import vi_jax as vj

FULL = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci") == "full"
K = 20_000 if FULL else 2_000  # samples per estimate
REPEATS = 20 if FULL else 8  # independent estimates per setting
DIMS = [1, 2, 4, 8, 16, 32] if FULL else [1, 4, 16]  # each new d costs a compilation
BOX = 6.0  # uniform on [-6, 6]^d


# %%
def proposals(model, x):
    """The three q's: uniform box (handled separately), the prior, a widened posterior."""
    post = model.posterior(x)
    widened = distrax.MultivariateNormalTri(post.loc, 1.5 * post.scale_tri)
    return {"prior": model.prior(), "widened posterior": widened}


def run(d, key):
    model = vj.make_linear_gaussian(jax.random.key(d), data_dim=2 * d, latent_dim=d)
    x, _ = model.sample(jax.random.key(1000 + d), 1)  # one data point, batch (1,)
    truth = model.log_marginal(x)[0]
    keys = jax.random.split(key, REPEATS)
    box = (-BOX * jnp.ones(d), BOX * jnp.ones(d))
    out = {}
    # R independent estimates at once: vmap over keys -> fields [R, 1], weights [R, K, 1]
    out = {
        "uniform box": jax.vmap(
            lambda k: vj.estimators.uniform_log_marginal(
                k, model.log_joint_fn(x), box, K, batch_shape=(1,)
            )
        )(keys)
    }
    for name, q in proposals(model, x).items():
        if name == "prior":  # the prior has no batch axis: broadcast it over the datum
            q = distrax.MultivariateNormalDiag(jnp.zeros((1, d)), jnp.ones((1, d)))
        out[name] = jax.vmap(
            lambda k, q=q: vj.importance_log_marginal(k, model.log_joint_fn(x), q, K)
        )(keys)
    return truth, out


# one compiled program per dimension (model, truth and all three estimators together)
results = {d: jax.jit(run, static_argnums=0)(d, jax.random.key(d)) for d in DIMS}

# %% [markdown]
# ## Error of the estimate, in nats
# For each repeat we look at log p̂(x) − log p(x). (A relative error p̂/p − 1 would be
# misleading here: it cannot go below −1, so an estimate that is e^−200 times too small
# would look *better* than one that is 10 times too large.)

# %%
names = ["uniform box", "prior", "widened posterior (oracle)"]
log_err = {n: [] for n in names}
for d, (truth, out) in results.items():
    truth = float(truth)
    for n in names:
        key_n = "widened posterior" if n.startswith("widened") else n
        log_err[n].append(np.asarray(out[key_n].log_marginal[:, 0]) - truth)
    print(
        f"d = {d:2d}: log p(x) = {truth:8.2f}; log p̂ − log p over {REPEATS} repeats  "
        + ", ".join(f"{n}: [{log_err[n][-1].min():.3g}, {log_err[n][-1].max():.3g}]" for n in names)
    )

fig, ax = plt.subplots(figsize=(6, 3.8))
for n in names:
    med = np.array([np.median(np.abs(e)) for e in log_err[n]])
    worst = np.array([np.max(np.abs(e)) for e in log_err[n]])
    (line,) = ax.semilogy(DIMS, med, "o-", label=f"q = {n}, median")
    ax.semilogy(DIMS, worst, "v:", color=line.get_color(), alpha=0.7, label=f"q = {n}, worst")
ax.set_xlabel("latent dimension d")
ax.set_ylabel("|log p̂(x) − log p(x)| [nats]")
ax.set_title(f"estimating log p(x) with K = {K} samples")
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()
d_max = DIMS[-1]
final = {n: np.median(np.abs(log_err[n][-1])) for n in names}
# the ordering the text states, at the largest dimension
assert final["uniform box"] > final["prior"] > final["widened posterior (oracle)"], final
assert np.all(log_err["uniform box"][-1] < 0) and np.median(log_err["prior"][-1]) < 0

# %% [markdown]
# The uniform box wastes almost every sample where p(x, z) is negligible; its error
# explodes with d (the posterior occupies a fraction of the box that shrinks
# exponentially) — at the largest d it is off by the hundreds of nats printed above.
# The prior is better but degrades too (several nats). The oracle proposal close to the
# posterior (a 1.5× wider copy of it) stays within a few tenths of a nat. The estimate of
# p(x) is unbiased in every case: when it is bad, it is bad because a handful of rare,
# huge weights carry it — so log p̂ is *usually too low*: at the largest d every error
# printed for the box is negative, and so is the median error of the prior (an occasional
# repeat that does hit a huge weight lands above the truth).

# %% [markdown]
# ## Warning lights: effective sample size and Pareto k̂
# ESS = (Σ w)² / Σ w² is K for equal weights and ≈ 1 when one weight dominates.
# k̂ estimates the tail index of the weights; k̂ > 0.7 (`vj.estimators.PARETO_K_THRESHOLD`) means
# the estimate is unreliable. k̂ can be *negative*: the tail of the weights is then
# bounded (lighter than exponential), which is the best case — the widened posterior
# gives weights p(x, z)/q(z) that are bounded, because q is wider than the posterior.

# %%
ess = {n: [] for n in names}
khat = {n: [] for n in names}
for d, (_truth, out) in results.items():
    for n in names:
        lw = out["widened posterior" if n.startswith("widened") else n].log_weights[0]
        ess[n].append(float(vj.effective_sample_size(lw)[0]))
        khat[n].append(float(vj.pareto_khat(lw)[0]))
    print(
        f"d = {d:2d}: "
        + "; ".join(f"{n}: ESS {ess[n][-1]:7.1f}, k̂ {khat[n][-1]:5.2f}" for n in names)
    )

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for n in names:
    axes[0].semilogy(DIMS, ess[n], "o-", label=n)
    axes[1].plot(DIMS, np.minimum(khat[n], 3.0), "o-", label=n)
axes[0].axhline(K, color="grey", ls=":", label="K")
axes[0].set_xlabel("latent dimension d")
axes[0].set_ylabel("effective sample size")
axes[0].set_title("ESS (higher is better)")
axes[1].axhline(vj.estimators.PARETO_K_THRESHOLD, color="r", ls="--", label="k̂ = 0.7")
axes[1].set_xlabel("latent dimension d")
axes[1].set_ylabel("Pareto k̂ (clipped at 3)")
axes[1].set_title("k̂ (above 0.7: do not trust)")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What we saw
# - Uniform Monte Carlo for p(x) is importance sampling with a uniform q; its relative
#   error grows exponentially with the latent dimension.
# - The prior as q is better, but only a q close to the posterior (here an oracle built
#   from the exact posterior) keeps the error small as d grows: the quality of an
#   importance sampler is the match between q and p(z | x).
# - The effective sample size collapses and k̂ rises past 0.7 exactly where the estimates
#   go wrong: both are computed from the weights alone, without knowing log p(x), so they
#   work as warning lights in problems where the answer is unknown.
#
# ## Try this
# Change the widening factor `1.5` in `proposals` to `0.7` (a q *narrower* than the
# posterior). *Predict:* what happens to k̂ and to the error at the largest d? (k̂ rises
# above 0.7 and the error grows: a too-narrow q misses the posterior's tails, so the
# weights p/q there are huge and rare — the failure mode of the reverse KL, notebook 09.)
