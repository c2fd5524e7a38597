# %% [markdown]
# # 12 — Discrete latents: the 2^20 sum done, and why the score function needs baselines
#
# **What this notebook shows.** The lecture's motivating model has z ∈ {0,1}^20: log p(x)
# is a sum of 2^20 ≈ one million terms, "unfathomable", so we estimate it. Here we
#
# 1. train the lecture's model (`vj.models.lecture_binary_vae`: 20 binary latents, a Bernoulli
#    prior with learnable logits, a linear Bernoulli decoder) on binarised digits with
#    DisARM, one of the estimators built for binary latents;
# 2. do the 2^20 sum anyway (`BinaryVAE.exact_log_marginal`, chunked enumeration) and
#    measure how far the ELBO, the IWAE bound and importance sampling from the prior fall
#    from it;
# 3. show, on the same trained model and real digits, why the plain score-function
#    gradient is unusable without a baseline, and what a baseline, a leave-one-out
#    baseline and DisARM do to its spread.
#
# Data: scikit-learn's 8x8 digits (64 pixels), binarised afresh at every step.

# %%
import os
import time

import jax
import jax.flatten_util
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import vi_jax as vj

FULL = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci") == "full"
STEPS = 3000 if FULL else 150  # DisARM training steps
NUM_IMAGES = 20 if FULL else 2  # test images whose 2^20 sum we do
R = 2000 if FULL else 200  # gradient draws per estimator

digits = vj.data.load_digits().images
x_train, x_test = jnp.asarray(digits[:1500]), jnp.asarray(digits[1500:])


def binarize(key, x):
    return (jax.random.uniform(key, x.shape) < x).astype(jnp.float32)


model = vj.models.lecture_binary_vae(64, rngs=0)
graphdef, params, rest = vj.split_params(model)
disarm = vj.estimators.registry.get_estimator("elbo", "disarm").fn
opt = optax.adam(3e-3)
opt_state = opt.init(params)


def step(carry, key):
    params, opt_state = carry
    kb, kx, ke = jax.random.split(key, 3)
    x = binarize(kx, x_train[jax.random.randint(kb, (50,), 0, x_train.shape[0])])

    def loss(p):
        m = vj.merge_params(graphdef, p, rest)
        return -jnp.mean(disarm(ke, m.log_joint_fn(x), m.posterior(x), 1))

    value, g = jax.value_and_grad(loss)(params)
    upd, opt_state = opt.update(g, opt_state, params)
    return (optax.apply_updates(params, upd), opt_state), -value


# every step in one compiled `lax.scan`
(params, opt_state), curve = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))(
    (params, opt_state), jax.random.split(jax.random.key(0), STEPS)
)
curve = np.asarray(curve)
trained = vj.merge_params(graphdef, params, rest)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, STEPS + 1), curve, lw=0.7)
ax.set_xlabel("training step (batch of 50 digits)")
ax.set_ylabel("train ELBO estimate (nats per image)")
ax.set_title("DisARM training of the 20-binary-latent model")
plt.show()
print(f"train ELBO: first 10 steps {np.mean(curve[:10]):.2f}, last 10 {np.mean(curve[-10:]):.2f}")

# %% [markdown]
# ## 1. The 2^20 sum, done
#
# `exact_log_marginal` generates the configurations 4,096 at a time from their integer
# indices inside `lax.scan` with a running log-sum-exp, so memory stays small.

# %%
x = binarize(jax.random.key(1), x_test[:NUM_IMAGES])
exact_fn = jax.jit(lambda xi: trained.exact_log_marginal(xi))
jax.block_until_ready(exact_fn(x[:1]))  # compile once
t0 = time.perf_counter()
exact = np.concatenate([np.asarray(exact_fn(x[i : i + 1])) for i in range(NUM_IMAGES)])
per_image = (time.perf_counter() - t0) / NUM_IMAGES
print(f"2^20 = {2**20:,} terms per image; {per_image:.2f} s per image on this machine")
print("exact log p(x):", np.round(exact, 3))

# %% [markdown]
# ## 2. How far each estimate is from it
#
# The ELBO (here averaged over 1,000 draws, so its own noise is small) is below
# log p(x) by KL(q || posterior); the IWAE bound L_K (one draw each) closes that gap as
# K grows; importance sampling from the prior (the naive p(x) = E_{p(z)}[p(x|z)]) uses
# no encoder at all. The table prints each estimate's error, averaged over the images.
# One draw of L_K is itself random: only its *mean* is below log p(x), so a single
# draw (a small K, few images) can land above the exact value.


# %%
@jax.jit  # all the estimates in one compiled program
def all_estimates(key):
    lj, q, prior = trained.log_joint_fn(x), trained.posterior(x), trained.prior_distribution()
    z = q.sample(seed=key, sample_shape=(1000,))
    out = {"ELBO": jnp.mean(lj(z) - q.log_prob(z), 0)}
    for kk in (5, 50, 5000):
        r = vj.importance_log_marginal(key, lj, q, kk, chunk_size=min(kk, 1000))
        out[f"IWAE K={kk}"] = r.log_marginal
    zp = prior.sample(seed=key, sample_shape=(5000, NUM_IMAGES))
    out["IS from prior K=5000"] = jax.nn.logsumexp(lj(zp) - prior.log_prob(zp), 0) - np.log(5000)
    return out


out = all_estimates(jax.random.key(2))  # a dict, its keys sorted: the table's order is ours
names = ["ELBO", "IWAE K=5", "IWAE K=50", "IWAE K=5000", "IS from prior K=5000"]
estimates = {name: np.asarray(out[name]) for name in names}
print(f"{'estimate':>22} | mean error vs the exact sum (nats)")
errors = {}
for name, v in estimates.items():
    errors[name] = float(np.mean(v - exact))
    print(f"{name:>22} | {errors[name]:+.3f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.bar(list(errors), [abs(e) + 1e-4 for e in errors.values()])
ax.set_yscale("log")
ax.set_ylabel("|estimate - exact log p(x)| (nats)")
ax.set_title(f"{NUM_IMAGES} test digits, exact sum over 2^20 configurations")
ax.tick_params(axis="x", labelrotation=30, labelsize=8)
plt.show()
print(
    "ELBO gap larger than the IWAE K=5000 gap:",
    abs(errors["ELBO"]) > abs(errors["IWAE K=5000"]),
)

# %% [markdown]
# ## 3. Why the score function needs baselines
#
# The score-function gradient is mean_k f(z_k) ∇ log q(z_k), with f = log p(x, z) -
# log q(z) of the order of the (negative) log-likelihood, tens of nats. ∇ log q has mean
# zero, so f's *offset* adds nothing to the mean but everything to the spread.
# Subtracting a baseline b (here the mean ELBO of the batch, as NVIL learns one) removes
# it; the leave-one-out baseline (K = 2) does so per sample; DisARM uses antithetic pairs.
# We draw R gradients w.r.t. the encoder's output layer for 16 test digits.

# %%
xg = binarize(jax.random.key(3), x_test[:16])
b = float(
    jax.jit(lambda k: jnp.mean(vj.elbo(k, trained.log_joint_fn(xg), trained.posterior(xg), 100)))(
        jax.random.key(4)
    )
)
registry = vj.estimators.registry
choices = {
    "score function, no baseline": ("score_function", 1, {}),
    f"score function, baseline b = {b:.1f}": ("score_function", 1, {"baseline": b}),
    "leave-one-out baseline (K=2)": ("score_function_loo", 2, {}),
    "DisARM (1 pair)": ("disarm", 1, {}),
}
enc_params = params["encoder"]


def grad_draws(name, k, options):
    est = registry.get_estimator("elbo", name).fn

    def one(key):
        def s(ep):
            p = dict(params)
            p["encoder"] = ep
            m = vj.merge_params(graphdef, p, rest)
            return jnp.sum(est(key, m.log_joint_fn(xg), m.posterior(xg), k, **options))

        g = jax.grad(s)(enc_params)
        return jax.flatten_util.ravel_pytree(g)[0]

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), R)))


variances, means = {}, {}
for label, (name, k, options) in choices.items():
    g = grad_draws(name, k, options)
    variances[label], means[label] = float(g.var(0).sum()), g.mean(0)
    print(f"{label:>32} | total variance {variances[label]:.4g}")

ref = means["DisARM (1 pair)"]
for label in choices:
    print(
        f"{label:>32} | |mean - DisARM mean| / |DisARM mean| = "
        f"{np.linalg.norm(means[label] - ref) / np.linalg.norm(ref):.3f}"
    )

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.bar(range(len(variances)), list(variances.values()))
ax.set_xticks(range(len(variances)), list(variances), rotation=20, fontsize=7)
ax.set_yscale("log")
ax.set_ylabel("total variance of the encoder gradient")
ax.set_title(f"{R} draws, 16 test digits")
plt.show()
ratio = (
    variances["score function, no baseline"] / variances[f"score function, baseline b = {b:.1f}"]
)
print(f"the baseline divides the score function's variance by {ratio:.0f}")

# %% [markdown]
# All four estimators are unbiased, so their means differ only by Monte Carlo noise —
# which, for the plain score function, is as large as the gradient itself (the relative
# distance printed above). The variance ratio printed last is the lecture's point: the
# baseline is not an optional refinement, it is what makes the score function usable.
#
# **Try this.** (a) Replace `"disarm"` in the training cell by `"arm"` or
# `"gumbel_softmax"` (add `temperature=0.5` to the call) and compare the final train ELBO
# and the exact log p(x). (b) Set the baseline `b` to 0.9 × and 1.1 × the batch ELBO: how
# sensitive is the variance to its value? (c) Make a model with 12 latents
# (`vj.models.make_binary_vae(64, 12, (200,), rngs=0, decoder_hidden=())`) and grade each
# estimator against `jax.grad` of `vj.estimators.exact_elbo`, the exact gradient.
