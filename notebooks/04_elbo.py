# %% [markdown]
# # 04 — The evidence lower bound
#
# **What this notebook shows.**
# 1. Jensen's inequality, log E[w] ≥ E[log w], drawn: it is why the ELBO is a *lower*
#    bound on log p(x) = log E_q[p(x, z)/q(z)].
# 2. The three forms of the ELBO — log-ratio `vj.elbo`, energy + entropy
#    `vj.elbo_entropy`, reconstruction − KL `vj.elbo_kl` — estimate the same number.
# 3. log p(x) = ELBO(q) + KL(q ‖ p(z | x)), checked numerically on `vj.make_linear_gaussian`
#    where every term is known.
# 4. The importance-weighted bound `vj.iwae_bound` tightens towards log p(x) as K grows.

# %%
import os

import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import vi_jax as vj

FULL = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci") == "full"
REPEATS = 1000 if FULL else 300

# %% [markdown]
# ## 1. Jensen: the log of a mean is above the mean of the logs
# Take a weight w that is 0.5 or 4 with equal probability. The chord between the two
# points on the concave curve log w lies below the curve, so its midpoint
# E[log w] is below log E[w].

# %%
w = np.array([0.5, 4.0])
grid = np.linspace(0.2, 5, 200)
fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.plot(grid, np.log(grid), label="log w")
ax.plot(w, np.log(w), "o--", color="C1", label="chord between the two values of w")
ax.plot(
    w.mean(), np.log(w).mean(), "s", color="C1", ms=8, label=f"E[log w] = {np.log(w).mean():.2f}"
)
ax.plot(
    w.mean(), np.log(w.mean()), "*", color="C2", ms=12, label=f"log E[w] = {np.log(w.mean()):.2f}"
)
ax.vlines(w.mean(), np.log(w).mean(), np.log(w.mean()), color="k", lw=1)
ax.set_xlabel("weight w = p(x, z) / q(z)")
ax.set_ylabel("log w")
ax.set_title("Jensen: log E[w] ≥ E[log w]  (gap = ELBO's gap)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## A problem with known answers
# z ~ N(0, I₂), x | z ~ N(Wz + b, 0.5² I₅). For one observation x we take a mean-field
# q(z) = N(m, diag s²) that is deliberately not the posterior (the true posterior is
# correlated, and we also shift the mean).

# %%
model = vj.make_linear_gaussian(jax.random.key(0), data_dim=5, latent_dim=2)
x, _ = model.sample(jax.random.key(1), 1)  # [1, 5]
post_mean, post_cov = model.posterior_params(x)
loc = post_mean + 0.3
scale = jnp.sqrt(jnp.diag(post_cov))[None] * 1.3  # [1, 2]
q = distrax.MultivariateNormalDiag(loc, scale)
log_px = float(model.log_marginal(x)[0])
exact_elbo = float(model.elbo(x, loc, jax.vmap(jnp.diag)(scale))[0])
print(f"log p(x) = {log_px:.4f}   exact ELBO(q) = {exact_elbo:.4f}")

# %% [markdown]
# ## 2. Three forms, one number
# Each estimator is unbiased; with many samples all agree with the exact ELBO. They
# differ in which part is computed in closed form: the entropy form uses the exact
# H[q], the KL form the exact KL(q ‖ p(z)). Whether that lowers the variance is a
# question for the numbers, below.

# %%
K = 20_000 if FULL else 5_000
key = jax.random.key(2)
forms = {
    "log-ratio  E[log p(x,z) − log q(z)]": vj.elbo(key, model.log_joint_fn(x), q, K),
    "energy + entropy  E[log p(x,z)] + H[q]": vj.elbo_entropy(key, model.log_joint_fn(x), q, K),
    "reconstruction − KL  E[log p(x|z)] − KL(q‖p(z))": vj.elbo_kl(
        key, model.log_likelihood_fn(x), q, model.prior(), K
    ),
}
for name, value in forms.items():
    print(f"{name:50s} {float(value[0]):.4f}")
print(f"{'exact (closed form)':50s} {exact_elbo:.4f}")
for value in forms.values():
    assert abs(float(value[0]) - exact_elbo) < 0.3  # several Monte Carlo standard errors

# %% [markdown]
# **Variance of one sample.** The standard deviation of each form's single-sample
# estimate, over 4000 independent samples:

# %%
single_keys = jax.random.split(jax.random.key(3), 4000)
single = {
    "log-ratio": jax.vmap(lambda k: vj.elbo(k, model.log_joint_fn(x), q, 1))(single_keys),
    "energy + entropy": jax.vmap(lambda k: vj.elbo_entropy(k, model.log_joint_fn(x), q, 1))(
        single_keys
    ),
    "reconstruction − KL": jax.vmap(
        lambda k: vj.elbo_kl(k, model.log_likelihood_fn(x), q, model.prior(), 1)
    )(single_keys),
}
single_sd = {name: float(v[:, 0].std()) for name, v in single.items()}
for name, sd in single_sd.items():
    print(f"{name:22s} single-sample sd {sd:.3f}")
assert single_sd["log-ratio"] < min(single_sd["energy + entropy"], single_sd["reconstruction − KL"])

# %% [markdown]
# Here the log-ratio form has the *lowest* variance, although it computes nothing in
# closed form. Closed-form parts remove the noise of that part only; in the log-ratio
# log p(x, z) − log q(z) the two terms are computed at the same z and their fluctuations
# partly cancel (exactly so when q is the posterior: the ratio is then the constant
# p(x)). Which form is quietest depends on the model and on q, and must be measured — as
# `benchmarks/estimator_quality.py` does for the gradient estimators.

# %% [markdown]
# ## 3. log p(x) = ELBO + KL(q ‖ p(z | x))
# The gap between the evidence and the ELBO is exactly the KL divergence from q to the
# true posterior; maximising the ELBO over q is minimising that KL.

# %%
kl_post = float(vj.kl_divergence(key, q, model.posterior(x))[0])
print(f"ELBO + KL(q‖p(z|x)) = {exact_elbo:.4f} + {kl_post:.4f} = {exact_elbo + kl_post:.4f}")
print(f"log p(x)            = {log_px:.4f}")
assert abs(exact_elbo + kl_post - log_px) < 1e-3

# q = the exact posterior (full covariance): the KL is 0, so the ELBO *is* log p(x), and
# every single sample of log p(x, z) − log q(z) equals it (zero variance).
post_tri = jnp.linalg.cholesky(post_cov)  # [1, 2, 2]
elbo_at_post = float(model.elbo(x, post_mean, post_tri)[0])
post_draws = jax.vmap(lambda k: vj.elbo(k, model.log_joint_fn(x), model.posterior(x), 1))(
    jax.random.split(jax.random.key(5), 1000)
)[:, 0]
print(f"q = posterior: exact ELBO {elbo_at_post:.4f}, log p(x) {log_px:.4f}")
print(f"               single-sample ELBO draws: sd {float(post_draws.std()):.2e}")
assert abs(elbo_at_post - log_px) < 1e-4 and float(post_draws.std()) < 1e-3

# Moving q's mean along a line: the gap tracks the KL all the way.
shifts = np.linspace(-1.5, 1.5, 31)
elbos, kls = [], []
for t in shifts:
    m = post_mean + t
    elbos.append(float(model.elbo(x, m, jax.vmap(jnp.diag)(scale))[0]))
    kls.append(
        float(
            vj.kl_divergence(key, distrax.MultivariateNormalDiag(m, scale), model.posterior(x))[0]
        )
    )
elbos, kls = np.array(elbos), np.array(kls)
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.axhline(log_px, color="k", label="log p(x)")
ax.plot(shifts, elbos, label="ELBO(q)")
ax.plot(shifts, elbos + kls, "--", label="ELBO(q) + KL(q‖p(z|x))")
ax.fill_between(shifts, elbos, log_px, alpha=0.15, label="gap = KL(q‖p(z|x))")
ax.set_xlabel("shift of q's mean from the posterior mean (both coordinates)")
ax.set_ylabel("nats")
ax.set_title("the ELBO gap is the KL to the posterior")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. IWAE: more samples, a tighter bound
# L_K = E[log (1/K) Σ_k w_k] increases with K, equals the ELBO at K = 1 and tends to
# log p(x) (Burda et al. 2016). That is a statement about the *expectation*: each point
# below is the mean of `REPEATS` independent draws of the bound, a Monte Carlo estimate
# with a standard error, so neighbouring large K can swap order, and a point can land
# slightly above log p(x), by a few standard errors.

# %%
Ks = [1, 2, 5, 10, 50, 200, 1000]
iwae_draws = jax.jit(
    jax.vmap(lambda kk, k_: vj.iwae_bound(kk, model.log_joint_fn(x), q, k_), (0, None)),
    static_argnums=1,
)
means, sds = [], []
for k_ in Ks:
    draws = iwae_draws(jax.random.split(jax.random.key(k_), REPEATS), k_)[:, 0]
    means.append(float(draws.mean()))
    sds.append(float(draws.std() / np.sqrt(REPEATS)))
    print(f"K = {k_:5d}: L_K ≈ {means[-1]:.4f} ± {sds[-1]:.4f}")
assert means[-1] > means[0] and means[-1] <= log_px + 3 * sds[-1]
# every apparent decrease, and every point above log p(x), is within Monte Carlo error
for i in range(1, len(Ks)):
    if means[i] < means[i - 1]:
        combined = np.hypot(sds[i], sds[i - 1])
        print(
            f"K = {Ks[i - 1]} -> {Ks[i]}: down {means[i - 1] - means[i]:.4f} = "
            f"{(means[i - 1] - means[i]) / combined:.1f} standard errors"
        )
        assert means[i - 1] - means[i] < 4 * combined
for k_, m, sd in zip(Ks, means, sds, strict=True):
    if m > log_px:
        print(f"K = {k_}: above log p(x) by {m - log_px:.4f} = {(m - log_px) / sd:.1f} s.e.")
        assert m - log_px < 4 * sd

fig, ax = plt.subplots(figsize=(5.5, 3.6))
ax.errorbar(Ks, means, yerr=2 * np.array(sds), fmt="o-", label="IWAE bound L_K (±2 s.e.)")
ax.axhline(log_px, color="k", label="log p(x)")
ax.axhline(exact_elbo, color="grey", ls=":", label="ELBO (K = 1)")
ax.set_xscale("log")
ax.set_xlabel("number of importance samples K")
ax.set_ylabel("bound [nats]")
ax.set_title("IWAE tightens with K")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What we saw
# - Jensen's inequality turns log E_q[w] = log p(x) into the lower bound E_q[log w] = ELBO.
# - The log-ratio, energy + entropy and reconstruction − KL forms are the same quantity;
#   they differ in which parts are computed in closed form — and, measured, that did not
#   make them quieter here: the log-ratio form had the smallest single-sample spread.
# - On the linear-Gaussian model, ELBO + KL(q ‖ p(z|x)) equals log p(x) to numerical
#   precision, and with q the exact posterior the ELBO equals log p(x) with zero variance:
#   the bound is tight exactly when q is the posterior.
# - The importance-weighted bound's expectation rises with K from the ELBO towards
#   log p(x); its estimates do so up to Monte Carlo error, which the printout quantifies.
#
# ## Try this
# In section 2, replace `q` by the exact posterior `model.posterior(x)` in the
# single-sample comparison. *Predict:* which form's standard deviation becomes zero?
# (Only the log-ratio one: log p(x, z) − log q(z) = log p(x) for every z, while the other
# two still average a noisy log p(x, z) or log p(x | z).)
