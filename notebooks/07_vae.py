# %% [markdown]
# # 07 — A variational autoencoder, end to end
#
# **What this notebook shows.** `vi_jax.experiment.train` runs a whole VAE job: it trains
# an MLP encoder/decoder on binarised digits with the single-sample ELBO and the pathwise
# gradient, estimates the test log-likelihood by importance sampling, and writes pictures.
# We run it on scikit-learn's 8×8 digits (no download; `full` size uses MNIST), show the
# pictures it wrote — training curve, reconstructions, prior samples, latent
# interpolations — and then restore the trained model to draw its 2-D latent space
# coloured by digit.

# %%
import json
import os
from pathlib import Path

import jax
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import optax

import vi_jax as vj
from vi_jax import experiment

FULL = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci") == "full"
OUT = Path("runs/07_vae_full" if FULL else "runs/07_vae_ci")

config = experiment.TrainConfig(
    dataset="mnist" if FULL else "digits",
    epochs=20 if FULL else 15,
    batch_size=128 if FULL else 64,
    latent_dim=2,  # two latents, so the latent space can be drawn
    hidden=(400,) if FULL else (128,),
    eval_samples=1000 if FULL else 100,
    eval_examples=1000 if FULL else 200,
    seed=0,
)
metrics = experiment.train(config, OUT, progress=False)
print(json.dumps(metrics["test"], indent=1, default=float)[:800])
print("pictures:", metrics["pictures"])

# %% [markdown]
# ## The pictures the job wrote

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 10))
for ax, name in zip(
    axes.ravel(),
    ["training_curve.png", "reconstructions.png", "samples.png", "interpolation.png"],
    strict=True,
):
    ax.imshow(mpimg.imread(OUT / name))
    ax.set_title(name)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# The training curve is the per-example bound (the ELBO) rising over epochs;
# reconstructions are decoder means at the encoder's posterior mean; samples decode
# z ~ p(z); interpolations decode straight lines between the posterior means of two test
# digits. With only two latent dimensions the model is deliberately small, so samples and
# reconstructions are blurry.

# %% [markdown]
# ## The 2-D latent space
# We rebuild the same model (`vj.make_mlp_vae` with the config's sizes), restore the
# latest checkpoint onto it (`vj.restore_checkpoint`) and plot the encoder's posterior
# mean E_q[z | x] of test images, coloured by their label (grey-level images here; the
# job itself trains and evaluates on binarised ones).

# %%
data = vj.data.load_mnist("test") if FULL else vj.data.load_digits()
images = np.asarray(vj.data.to_unit_interval(data.images) if FULL else data.images, np.float32)
labels = np.asarray(data.labels)
if not FULL:  # the job's test split is the last 20 % of the digits
    cut = int(0.8 * len(images))
    images, labels = images[cut:], labels[cut:]
images = images[:2000]
labels = labels[:2000]

vae = vj.make_mlp_vae(
    data_dim=images.shape[1],
    latent_dim=config.latent_dim,
    hidden=config.hidden,
    activation=config.activation,
    prior=config.prior,
    rngs=config.seed,
)
graphdef, params, rest = vj.split_params(vae)
state_like = vj.init_train_state(params, optax.adam(config.learning_rate))
ckpt = vj.restore_checkpoint(OUT / "checkpoints", state_like)
vae = vj.merge_params(graphdef, ckpt.state.params, rest)
z = np.asarray(vae.posterior(jax.numpy.asarray(images)).mean())
print("restored epoch", ckpt.epoch, "- latent means", z.shape)

fig, ax = plt.subplots(figsize=(6, 5))
sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=8)
fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
ax.set_xlabel("z₁ (posterior mean)")
ax.set_ylabel("z₂ (posterior mean)")
ax.set_title("test digits in the VAE's latent space")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What we saw
# - One call, `experiment.train(config, out)`, trains a VAE, evaluates the importance-
#   sampled test log-likelihood (which is above the test ELBO, as it must be), and writes
#   its training curve, reconstructions, prior samples and interpolations.
# - Even with two latent dimensions and no labels in training, the encoder places digits
#   of the same class near one another: the latent space clusters by digit.
