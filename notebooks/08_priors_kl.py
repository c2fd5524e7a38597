# %% [markdown]
# # 08 — Priors, the KL term, and posterior collapse
#
# **What this notebook shows.**
# 1. Three priors p(z) used in VAEs — standard Gaussian, Laplace, mixture of Gaussians —
#    drawn in one dimension.
# 2. KL(q ‖ p) in closed form vs by Monte Carlo (`vj.kl_divergence(method=...)`): the
#    Monte Carlo KL term has its own variance, yet the variance of the *total* ELBO
#    estimate need not drop when the KL is computed exactly.
# 3. Trained VAEs with each prior, and their active units (Burda et al.'s criterion).
# 4. A real posterior collapse: the same VAE trained with a KL weight β = 4 (a β-VAE)
#    beside β = 1 — the KL of each latent, active units, reconstructions and the ELBO.

# %%
import os

import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import vi_jax as vj
from vi_jax import plotting

FULL = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci") == "full"
R = 5000 if FULL else 1000

# %% [markdown]
# ## 1. Three priors
# All three have mean 0; the Laplace prior is peaked with heavier tails (it favours
# sparse codes), the mixture is multimodal (it can hold clusters).

# %%
priors = {
    "Gaussian N(0, 1)": distrax.Normal(0.0, 1.0),
    "Laplace(0, 1/√2) (variance 1)": distrax.Laplace(0.0, 1.0 / np.sqrt(2.0)),
    "mixture of 3 Gaussians": distrax.MixtureSameFamily(
        distrax.Categorical(probs=jnp.array([0.3, 0.4, 0.3])),
        distrax.Normal(jnp.array([-2.0, 0.0, 2.0]), jnp.array([0.5, 0.5, 0.5])),
    ),
}
zs = jnp.linspace(-4, 4, 400)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, p in priors.items():
    axes[0].plot(zs, jnp.exp(p.log_prob(zs)), label=name)
    axes[1].plot(zs, p.log_prob(zs), label=name)
axes[0].set_ylabel("density p(z)")
axes[1].set_ylabel("log p(z)")
axes[1].set_ylim(-12, 1)
for ax in axes:
    ax.set_xlabel("z")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Closed-form vs Monte Carlo KL
# For a Gaussian q and a Gaussian prior, KL(q ‖ p) has a closed form, and distrax
# implements it. KL(Gaussian ‖ Laplace) has one too (next cell), but distrax does not
# implement it, so `vj.kl_divergence` falls back to Monte Carlo for the Laplace prior, as
# for the mixture, which has none: the mean over z ~ q of log q(z) − log p(z). Below,
# q = N(1, 0.5²) against each prior, K = 1 sample per estimate.

# %% [markdown]
# **KL(N(μ, σ²) ‖ Laplace(0, b)) in closed form.** KL = E_q[log q] − E_q[log p] =
# −½ log(2πeσ²) + log(2b) + E_q|z| / b, and E_q|z| is the mean of a folded normal:
# σ √(2/π) exp(−μ²/2σ²) + μ (1 − 2Φ(−μ/σ)).

# %%
from scipy.stats import norm as _norm  # noqa: E402  (scipy ships with jax)


def kl_normal_laplace(mu, sigma, b):
    """Closed-form KL(N(mu, sigma^2) || Laplace(0, b))."""
    abs_mean = sigma * np.sqrt(2 / np.pi) * np.exp(-(mu**2) / (2 * sigma**2)) + mu * (
        1 - 2 * _norm.cdf(-mu / sigma)
    )
    return -0.5 * np.log(2 * np.pi * np.e * sigma**2) + np.log(2 * b) + abs_mean / b


# %%
q1 = distrax.Normal(1.0, 0.5)
key = jax.random.key(0)
for name, p in priors.items():
    mc = jax.vmap(lambda k: vj.kl_divergence(k, q1, p, 1, method="mc"))(jax.random.split(key, R))
    line = f"{name:32s} MC KL: mean {float(mc.mean()):.4f} ± {float(mc.std() / np.sqrt(R)):.4f}, sd of one estimate {float(mc.std()):.3f}"
    if name.startswith("Gaussian"):
        line += f";  closed form {float(vj.kl_divergence(key, q1, p, method='analytic')):.4f}"
    if name.startswith("Laplace"):
        line += f";  closed form (below) {float(kl_normal_laplace(1.0, 0.5, 1 / np.sqrt(2))):.4f}"
    print(line)
mc_laplace = jax.vmap(
    lambda k: vj.kl_divergence(k, q1, priors["Laplace(0, 1/√2) (variance 1)"], 1, method="mc")
)(jax.random.split(key, R))
assert abs(float(mc_laplace.mean()) - kl_normal_laplace(1.0, 0.5, 1 / np.sqrt(2))) < 4 * float(
    mc_laplace.std() / np.sqrt(R)
)

# %% [markdown]
# Now the ELBO of `vj.make_linear_gaussian` (8 latents) in its reconstruction − KL form
# `vj.elbo_kl`, one sample per estimate, with the KL term computed exactly or by Monte
# Carlo on the same sample. The exact KL removes the KL term's variance — but the total
# ELBO estimate's variance need not fall: with the Monte Carlo KL, the noise in
# log p(z) − log q(z) is correlated with the noise in log p(x | z) and partly cancels it.

# %%
model = vj.make_linear_gaussian(jax.random.key(1), data_dim=10, latent_dim=8)
x, _ = model.sample(jax.random.key(2), 1)
mean, cov = model.posterior_params(x)


def variances(q):
    keys = jax.random.split(jax.random.key(3), R)

    def recon_kl(kl):
        return jax.vmap(
            lambda k: vj.elbo_kl(k, model.log_likelihood_fn(x), q, model.prior(), 1, kl=kl)[0]
        )(keys)

    kl_mc = jax.vmap(lambda k: vj.kl_divergence(k, q, model.prior(), 1, method="mc")[0])(keys)
    return float(recon_kl("analytic").var()), float(recon_kl("mc").var()), float(kl_mc.var())


rows = []
for label, scale in [
    ("q = mean-field fit (near posterior)", jnp.sqrt(jnp.diag(cov))),
    ("q = posterior mean, scale 1", jnp.ones(8)),
]:
    q = distrax.MultivariateNormalDiag(mean, jnp.broadcast_to(scale, mean.shape))
    v_an, v_mc, v_kl = variances(q)
    rows.append((label, v_an, v_mc, v_kl))
    print(
        f"{label:38s} Var[ELBO est.]: exact KL {v_an:8.3f}, MC KL {v_mc:8.3f};  Var[MC KL term] {v_kl:.3f}"
    )

fig, ax = plt.subplots(figsize=(7, 3.6))
w = 0.25
for i, (_label, v_an, v_mc, v_kl) in enumerate(rows):
    ax.bar(i - w, v_kl, w, color="C2", label="Var[MC KL term]" if i == 0 else None)
    ax.bar(i, v_an, w, color="C0", label="Var[ELBO], closed-form KL" if i == 0 else None)
    ax.bar(i + w, v_mc, w, color="C1", label="Var[ELBO], MC KL" if i == 0 else None)
ax.set_xticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
ax.set_yscale("log")
ax.set_ylabel("variance of a 1-sample estimate")
ax.set_title("exact KL kills the KL term's variance, not necessarily the ELBO's")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not on, the bars
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Trained VAEs with the three priors: active units
# A latent z_d is *active* (Burda et al. 2016) if its posterior mean moves with the data:
# A_d = Cov_x(E_q[z_d | x]) > 0.01. The KL term of the ELBO pushes every q(z_d | x)
# towards the prior, and a latent whose q(z_d | x) *is* the prior for every x carries no
# information about x: KL 0 and A_d = 0. We train the same small VAE on 8×8 digits
# (16 latents — more than 64-pixel digits need —, one hidden layer of 64) with each
# prior, from the library's pieces: the network and optimiser of `experiment.build`, the
# loss `vj.make_vae_loss`, one compiled epoch `vj.make_epoch_fn` over freshly binarised
# batches, and `vj.fit`. `train_vae` also takes a KL weight β, used in section 4. Each
# model is then evaluated on the 360 test images by `vj.evaluate_model` (plain ELBO with
# its two terms, importance-sampled log-likelihood with 100 samples, and the posterior
# means, whose variance over x is the activity).

# %%
from vi_jax import experiment  # noqa: E402
from vi_jax.diagnostics import latent_activity  # noqa: E402

EPOCHS = 60 if FULL else 30


LATENTS = 16


def digits_config(prior_name):
    return experiment.TrainConfig(
        dataset="digits",
        epochs=EPOCHS,
        batch_size=64,
        latent_dim=LATENTS,
        hidden=(64,),
        prior=prior_name,
    )


x_train, _, x_test, _ = experiment.load_data(digits_config("normal"))
x_train = jnp.asarray(x_train)  # [1437, 64] grey levels in [0, 1]
x_test = jnp.asarray(vj.data.static_binarize(x_test, seed=10_000), jnp.float32)  # [360, 64]


def train_vae(prior_name, beta=1.0):
    """Trains the VAE with a prior and a KL weight beta; returns (vae, view, params)."""
    config = digits_config(prior_name)
    graphdef, params, rest, _, optimizer = experiment.build(config, x_train.shape[1], len(x_train))
    loss_fn = vj.make_vae_loss(graphdef, vj.elbo_pathwise, beta=beta, rest=rest, monitor=False)
    epoch_fn = vj.make_epoch_fn(
        vj.make_train_step(loss_fn, optimizer),
        batch_size=config.batch_size,
        num_examples=len(x_train),
        preprocess=vj.data.dynamic_binarize,  # a fresh binarisation of each batch
    )
    state = vj.init_train_state(params, optimizer)
    key = jax.random.key(config.seed)  # the same initialisation, key and batches for all
    params = vj.fit(key, state, epoch_fn, x_train, num_epochs=EPOCHS, progress=False).state.params
    return vj.merge_params(graphdef, params, rest), vj.vae_view(graphdef, rest), params


def evaluate(trained):
    """Test-set summary (nats per image) and activity Cov_x E_q[z_d | x] per latent."""
    vae, view, params = trained
    summary = vj.evaluate_model(jax.random.key(5), params, view, x_test, num_samples=100).summary()
    count, activity = latent_activity(vae.posterior(x_test).mean())  # Burda et al.'s criterion
    assert int(count) == summary["active_units"]
    return summary, np.asarray(activity)


models = {name: train_vae(name) for name in ("normal", "laplace", "mog")}
results = {name: evaluate(trained) for name, trained in models.items()}
print(f"{'prior':8s} {'test log-lik (IS)':>18s} {'ELBO':>9s} {'KL':>7s} {'active units':>13s}")
for prior_name, (t, _) in results.items():
    print(
        f"{prior_name:8s} {t['log_likelihood']:18.2f} {t['elbo']:9.2f} {t['kl']:7.2f} "
        f"{t['active_units']:>9d} / {LATENTS}"
    )
fig, ax = plt.subplots(figsize=(5.5, 3.3))
ax.bar(list(results), [t["active_units"] for t, _ in results.values()], color="C0")
ax.axhline(LATENTS, color="grey", ls=":", label="latents available")
ax.set_ylim(0, LATENTS + 3)
ax.set_ylabel(f"active units (of {LATENTS})")
ax.set_title("trained VAEs on 8×8 digits: how many latents survive")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not on, the bars
fig.tight_layout()
plt.show()
elbos = [t["elbo"] for t, _ in results.values()]
assert all(t["active_units"] == LATENTS and t["kl"] < 5 for t, _ in results.values())
assert max(elbos) - min(elbos) < 2

# %% [markdown]
# With β = 1 (the plain ELBO) and this little training, no latent collapses: all 16 pass
# the threshold for every prior (printed above), although the total KL is under 5 nats.
# The priors' ELBOs differ by less than 2 nats here; do not read a ranking into them.
#
# ## 4. A real posterior collapse: the β-VAE
# Collapse appears on its own when a latent's information is not worth its KL cost.
# The β-VAE (Higgins et al. 2017) maximises E_q[log p(x | z)] − β KL(q(z | x) ‖ p(z)):
# with β > 1 every nat a latent carries about x costs β nats, so a latent survives only
# if the decoder gains more than β nats of reconstruction from it. We train the
# Gaussian-prior VAE of section 3 again with `train_vae`, changing only β from 1 to 4:
# same network, training images, initialisation, key, batches and epochs. Both models
# are judged by the same yardstick, the plain ELBO (β = 1) on the test images, and by
# the KL of each latent, KL(q(z_d | x) ‖ N(0, 1)) averaged over the test images.

# %%
BETA = 4.0
betas = {1.0: models["normal"], BETA: train_vae("normal", beta=BETA)}
summary, activity, kl_dims = {}, {}, {}
for beta, trained in betas.items():
    summary[beta], activity[beta] = results["normal"] if beta == 1.0 else evaluate(trained)
    q = trained[0].posterior(x_test)  # diagonal Gaussian q(z | x), batch [360]
    q_dims = distrax.Normal(q.mean(), q.stddev())  # its LATENTS factors, batch [360, LATENTS]
    kl_dims[beta] = np.asarray(
        vj.kl_divergence(key, q_dims, distrax.Normal(0.0, 1.0), method="analytic").mean(0)
    )
print(
    f"{'β':>4s} {'active units':>13s} {'KL':>6s} {'E_q log p(x|z)':>15s} {'ELBO':>8s} "
    f"{'log-lik (IS)':>13s}   [nats per test image]"
)
for beta, t in summary.items():
    print(
        f"{beta:4.0f} {t['active_units']:>8d} / {LATENTS} {t['kl']:6.2f} {t['recon']:15.2f} "
        f"{t['elbo']:8.2f} {t['log_likelihood']:13.2f}"
    )
for beta in betas:
    print(f"β = {beta:.0f}: KL per latent [nats]   ", np.round(kl_dims[beta], 3))
    print(f"β = {beta:.0f}: activity Cov_x E_q[z_d|x]", np.round(activity[beta], 4))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
width = 0.4
for i, beta in enumerate(betas):
    offset = (i - 0.5) * width
    label = f"β = {beta:.0f}"
    axes[0].bar(np.arange(LATENTS) + offset, kl_dims[beta], width, color=f"C{i}", label=label)
    axes[1].bar(np.arange(LATENTS) + offset, activity[beta], width, color=f"C{i}", label=label)
axes[1].axhline(0.01, color="r", ls="--", label="threshold 0.01")
axes[0].set_ylabel("mean KL(q(z_d|x) ‖ p(z_d)) [nats]")
axes[0].set_title("KL per latent")
axes[1].set_ylabel("Cov_x E_q[z_d | x]")
axes[1].set_title("activity per latent")
for ax in axes:
    ax.set_yscale("log")
    ax.set_xlabel("latent d")
    ax.set_xticks(range(16))
axes[0].legend(loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2)  # below the axes
axes[1].legend(loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=3)
fig.tight_layout()
plt.show()

# %% [markdown]
# What collapse costs: a collapsed q(z | x) is the same for every x, so the decoder sees
# noise from the prior and draws nearly the same image for every x. Reconstructions (the
# decoder's mean at the posterior mean) of the first 10 test digits:

# %%
recons = {}
for beta, (vae, _, _) in betas.items():
    recons[beta] = np.asarray(vae.decode(vae.posterior(x_test).mean()).mean())  # [360, 64]
spread = {beta: float(r.std(axis=0).mean()) for beta, r in recons.items()}
for beta in betas:
    print(
        f"β = {beta:.0f}: sd over test images of a reconstructed pixel, mean over pixels "
        f"{spread[beta]:.3f}"
    )
fig, axes = plt.subplots(3, 1, figsize=(7, 3.4))
rows = [("test digits", np.asarray(x_test[:10]))]
rows += [(f"β = {b:.0f} reconstructions", recons[b][:10]) for b in betas]
for ax, (title, images) in zip(axes, rows, strict=True):
    ax.imshow(plotting.tile_images(images, 10), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()

s1, sb = summary[1.0], summary[BETA]
assert sb["active_units"] < s1["active_units"] == LATENTS  # collapse: fewer active units
assert sb["active_units"] <= 2 and np.all(kl_dims[BETA][activity[BETA] <= 0.01] < 0.02)
assert sb["kl"] < 0.1 * s1["kl"]  # the KL term goes to 0 ...
assert sb["recon"] < s1["recon"] - 1.0  # ... and so does what z tells the decoder
assert sb["elbo"] < s1["elbo"] and sb["log_likelihood"] < s1["log_likelihood"]
assert s1["kl"] < 5 and s1["elbo"] - sb["elbo"] < 5  # a few nats, a cost of a few nats
assert spread[BETA] < 0.1 * spread[1.0]  # the reconstructions stop depending on x

# %% [markdown]
# Read the numbers above. With β = 4 every inactive latent's KL is below 0.02 nats and
# the total KL falls to under a tenth of the β = 1 model's: q(z | x) ≈ p(z) for every
# test image. That is posterior collapse, and the active-unit count shows it: at most 2
# of the 16 latents pass the 0.01 threshold, against all 16 for the β = 1 model trained
# identically (table, bars). Since z now says almost nothing about x, the decoder draws
# nearly the same image for every input (picture): the spread of a reconstructed pixel
# over test images falls by more than a factor of ten (printed). The price is paid in
# the plain ELBO: the reconstruction term falls by more than the KL saved, so the ELBO
# and the importance-sampled log-likelihood are both lower than the β = 1 model's. The
# price is small here, under 5 nats per image, because the β = 1 model itself stores
# less than 5 nats in z (its KL): 8×8 binary digits hold little that an average image
# does not already explain.

# %% [markdown]
# ## What we saw
# - Gaussian, Laplace and mixture priors differ in their peaks, tails and modes. KL to a
#   Gaussian q is closed form for the Gaussian and (via the folded normal) the Laplace
#   prior, which matches the Monte Carlo estimate above; the mixture has none, and
#   vi_jax uses Monte Carlo for both non-Gaussian priors.
# - A closed-form KL removes the KL term's own variance, but the variance of the whole
#   ELBO estimate is not guaranteed to fall: the Monte Carlo KL's noise can cancel the
#   reconstruction term's (printed above for two choices of q).
# - Trained with the plain ELBO (β = 1), the VAEs of section 3 keep all 16 latents
#   active for each prior, with a total KL of a few nats.
# - Posterior collapse, made real by a KL weight β = 4 in an otherwise identical
#   training run (section 4): almost every latent's q(z_d | x) becomes the prior (KL → 0,
#   activity below 0.01), the reconstructions stop depending on x, and the plain ELBO and
#   log-likelihood drop. The active-unit count detects it.
#
# ## Try this
# In section 3, set `LATENTS = 2`. *Predict:* how is the KL shared between the two
# latents? (Both carry a large share: with only two latents the decoder gains a lot
# from each, more than its KL cost; collapse is what happens to latents it can spare.)
