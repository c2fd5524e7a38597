# %% [markdown]
# # 09 — Which KL? Reverse (mode-seeking) vs forward (mass-covering)
#
# **What this notebook shows.** We fit a single Gaussian q(z) = N(m, s²) to a bimodal
# 1-D target p(z) in two ways:
#
# - **reverse KL**, KL(q ‖ p) = E_q[log q − log p] — what maximising the ELBO minimises.
#   Fitted by stochastic gradient ascent on the ELBO with `vj.elbo_pathwise` (p is
#   normalised here, so ELBO = −KL(q ‖ p)). It is *mode-seeking*: q locks onto one mode,
#   and which one depends on where it starts.
# - **forward KL**, KL(p ‖ q) = E_p[log p − log q] — minimised by maximising E_p[log q]
#   over samples from p. It is *mass-covering*: q matches p's mean and variance and puts
#   its mass between the modes, where p has little.

# %%
import os

import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax

import vi_jax as vj

FULL = os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci") == "full"
STEPS = 3000 if FULL else 1500

target = distrax.MixtureSameFamily(
    distrax.Categorical(probs=jnp.array([0.7, 0.3])),
    distrax.Normal(jnp.array([-2.0, 2.5]), jnp.array([0.6, 0.8])),
)


def log_target(z):
    """log p(z) for z [K, *batch, 1] -> [K, *batch] (the estimator convention)."""
    return target.log_prob(z[..., 0])


def make_q(phi):
    return distrax.MultivariateNormalDiag(phi["m"][None], jnp.exp(phi["log_s"])[None])


def fit(loss, phi, steps=STEPS, lr=3e-2):
    opt = optax.adam(lr)

    def step(carry, key):
        phi, state = carry
        g = jax.grad(loss)(phi, key)
        updates, state = opt.update(g, state)
        return (optax.apply_updates(phi, updates), state), None

    (phi, _), _ = jax.lax.scan(
        jax.jit(step), (phi, opt.init(phi)), jax.random.split(jax.random.key(0), steps)
    )
    return phi


# %% [markdown]
# ## Reverse KL from two starting points


# %%
def reverse_loss(phi, key):
    return -vj.elbo_pathwise(key, log_target, make_q(phi), 16).mean()


starts = {"start at m = −1": -1.0, "start at m = +1.5": 1.5}
reverse = {}
for name, m0 in starts.items():
    phi = fit(reverse_loss, {"m": jnp.array([m0]), "log_s": jnp.array([-0.7])})  # s0 = 0.5
    reverse[name] = phi
    elbo = vj.elbo(jax.random.key(1), log_target, make_q(phi), 20_000)[0]
    print(
        f"reverse KL, {name}: m = {float(phi['m'][0]):+.3f}, s = {float(jnp.exp(phi['log_s'][0])):.3f}, "
        f"KL(q‖p) ≈ {float(-elbo):.3f}"
    )

# %% [markdown]
# ## Forward KL from samples of p
# Minimising KL(p ‖ q) over q is maximising E_p[log q(z)], estimated on samples of p;
# for a Gaussian q the optimum matches p's mean and variance (moment matching).


# %%
def forward_loss(phi, key):
    z = target.sample(seed=key, sample_shape=(256,))[:, None, None]  # [256, 1, 1]
    return -make_q(phi).log_prob(z).mean()


phi_fwd = fit(forward_loss, {"m": jnp.array([-1.0]), "log_s": jnp.array([0.0])})
zs = target.sample(seed=jax.random.key(2), sample_shape=(200_000,))
print(
    f"forward KL: m = {float(phi_fwd['m'][0]):+.3f}, s = {float(jnp.exp(phi_fwd['log_s'][0])):.3f}"
)
print(f"moments of p: mean {float(zs.mean()):+.3f}, sd {float(zs.std()):.3f}")
assert abs(float(phi_fwd["m"][0]) - float(zs.mean())) < 0.15
ms = sorted(float(p["m"][0]) for p in reverse.values())
assert ms[0] < -1.5 and ms[1] > 2.0  # the two reverse fits sit on the two modes

# %%
grid = jnp.linspace(-5, 6, 500)
fig, ax = plt.subplots(figsize=(7, 4))
ax.fill_between(grid, jnp.exp(target.log_prob(grid)), color="grey", alpha=0.3, label="target p(z)")
for i, (name, phi) in enumerate(reverse.items()):
    q = distrax.Normal(phi["m"][0], jnp.exp(phi["log_s"][0]))
    ax.plot(grid, jnp.exp(q.log_prob(grid)), color=f"C{i}", label=f"reverse KL(q‖p), {name}")
q = distrax.Normal(phi_fwd["m"][0], jnp.exp(phi_fwd["log_s"][0]))
ax.plot(grid, jnp.exp(q.log_prob(grid)), "k--", label="forward KL(p‖q)")
ax.set_xlabel("z")
ax.set_ylabel("density")
ax.set_title("mode-seeking (reverse) vs mass-covering (forward)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What we saw
# - Minimising the reverse KL(q ‖ p) — maximising the ELBO — puts q on a single mode; it
#   is heavily penalised wherever q has mass and p has little, so it avoids the gap
#   between the modes. Which mode it finds depends on the initialisation, and its
#   variance underestimates p's. Each fit is a local optimum with KL ≈ −log(weight of
#   its mode): ≈ 0.36 = −log 0.7 on the heavy mode, ≈ 1.20 = −log 0.3 on the light one.
# - Minimising the forward KL(p ‖ q) is penalised wherever p has mass and q has little,
#   so q spreads over both modes, matching p's mean and variance, with much of its mass
#   where p has almost none.
# - Variational inference with the ELBO thus tends to give over-confident, mode-seeking
#   posteriors; importance-weighted bounds (notebook 04) move the fit towards mass-covering.
