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
import numpy as np
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
# ## A correlated 2-D posterior: mean-field q inside (reverse) or around (forward)
# The same contrast, in the setting of most of the lecture: a correlated Gaussian
# "posterior" p(z) = N(0, Σ) with correlation 0.9, and a *mean-field* q = N(m, diag s²).
# Both optima are known in closed form — reverse KL: s_i² = 1/Λ_ii (Λ = Σ⁻¹, the
# conditional variances); forward KL: s_i² = Σ_ii (the marginal variances) — and we check
# the reverse one by fitting it with `vj.elbo_pathwise`.

# %%
rho = 0.9
cov = jnp.array([[1.0, rho], [rho, 1.0]])
post2 = distrax.MultivariateNormalFullCovariance(jnp.zeros(2), cov)
prec = jnp.linalg.inv(cov)
s_reverse = 1 / jnp.sqrt(jnp.diag(prec))  # sqrt(1 - rho^2) = 0.436
s_forward = jnp.sqrt(jnp.diag(cov))  # 1


def log_post2(z):
    return post2.log_prob(z)


def make_q2(phi):
    return distrax.MultivariateNormalDiag(phi["m"], jnp.exp(phi["log_s"]))


def fit_bound(bound, k):
    """Mean-field q maximising `bound` (a surrogate estimator) with k samples."""

    def loss(phi, key):
        return -bound(key, log_post2, make_q2(phi), k)

    return fit(loss, {"m": jnp.array([0.5, -0.5]), "log_s": jnp.zeros(2)})


phi_rev2 = fit_bound(vj.elbo_pathwise, 16)
s_fit = jnp.exp(phi_rev2["log_s"])
print(f"reverse KL, closed form: s = {np.round(np.asarray(s_reverse), 3)}")
print(
    f"reverse KL, fitted     : s = {np.round(np.asarray(s_fit), 3)}, m = {np.round(np.asarray(phi_rev2['m']), 3)}"
)
print(f"forward KL, closed form: s = {np.round(np.asarray(s_forward), 3)}")
assert np.allclose(s_fit, s_reverse, atol=0.05)

g = np.linspace(-3, 3, 200)
Z1, Z2 = np.meshgrid(g, g)
pts = jnp.stack([Z1, Z2], -1)
fig, ax = plt.subplots(figsize=(5, 5))
ax.contour(Z1, Z2, np.exp(post2.log_prob(pts)), levels=5, colors="grey")
for s_, style, label in [
    (s_fit, "C0", "reverse KL(q‖p): inside"),
    (s_forward, "C3", "forward KL(p‖q): around"),
]:
    qd = distrax.MultivariateNormalDiag(jnp.zeros(2), s_)
    ax.contour(Z1, Z2, np.exp(qd.log_prob(pts)), levels=3, colors=style, linestyles="--")
    ax.plot([], [], style, ls="--", label=label)
ax.plot([], [], "grey", label="posterior p(z), correlation 0.9")
ax.set_aspect("equal")
ax.set_xlabel("z₁")
ax.set_ylabel("z₂")
ax.set_title("mean-field fits to a correlated posterior")
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# The reverse-KL q sits *inside* the posterior: its width is the conditional width
# √(1 − ρ²) = 0.44, so it is over-confident about each coordinate. The forward-KL q has
# the marginal width 1 and sits *around* it, putting mass in the empty corners.
#
# ## Importance weighting moves the fit towards mass-covering
# Maximising the IWAE bound (`vj.iwae_pathwise`) with K samples instead of the ELBO:
# as K grows, the bound penalises a too-narrow q more than a too-wide one — an
# importance sampler needs a proposal that covers the target — so the fitted mean-field
# widths grow from the reverse-KL value past the marginal one: for large K the optimum
# heads towards the proposal that minimises the variance of the weights, which for a
# mean-field q is wider than the marginal.

# %%
iwae_ks = [1, 10, 100] if not FULL else [1, 5, 20, 100, 500]
iwae_s = []
for k in iwae_ks:
    phi_k = fit_bound(vj.iwae_pathwise, k)
    iwae_s.append(float(jnp.exp(phi_k["log_s"]).mean()))
    print(f"IWAE, K = {k:3d}: fitted mean-field width s = {iwae_s[-1]:.3f}")
assert all(b > a for a, b in zip(iwae_s, iwae_s[1:], strict=False)), iwae_s
assert iwae_s[0] < float(s_forward[0]) < iwae_s[-1]  # from inside to around
fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.semilogx(iwae_ks, iwae_s, "o-", label="IWAE fit")
ax.axhline(float(s_reverse[0]), color="C0", ls=":", label="reverse KL (ELBO) optimum")
ax.axhline(float(s_forward[0]), color="C3", ls=":", label="forward KL optimum")
ax.set_xlabel("K")
ax.set_ylabel("fitted width s of q")
ax.set_title("IWAE widens q: from inside to around")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Why variational inference uses the reverse KL
# The forward KL(p(z|x) ‖ q) is an expectation under the posterior: we would need samples
# from p(z | x), which is what we are trying to approximate (above we could only fit it
# because the target was a known distribution we can sample). The reverse KL needs
# samples from q — ours to choose — and log p(x, z), the model, up to the unknown
# constant log p(x): KL(q ‖ p(z|x)) = log p(x) − ELBO(q). Adding any constant to the
# log-target shifts the ELBO by exactly that constant, and leaves its maximiser alone:

# %%
q_check = make_q2(phi_rev2)
c = 123.0
e1 = vj.elbo(jax.random.key(7), log_post2, q_check, 1000)
e2 = vj.elbo(jax.random.key(7), lambda z: log_post2(z) + c, q_check, 1000)
print(
    f"ELBO with log p: {float(e1):.4f}; with log p + {c}: {float(e2):.4f}; difference {float(e2 - e1):.4f}"
)
assert abs(float(e2 - e1) - c) < 1e-3

# %% [markdown]
# ## The forward KL without samples of p: reweighted wake-sleep
# Self-normalised importance sampling removes that obstacle (Bornschein & Bengio 2015):
# with z_k ~ q and weights w̃_k ∝ p(z_k) / q(z_k), normalised over the K samples,
# −∇ KL(p ‖ q) = E_p[∇ log q(z)] ≈ Σ_k w̃_k ∇ log q(z_k). That is the *wake-φ* update of
# reweighted wake-sleep, `vj.estimators.rws_wake_phi`: it needs only samples of q and the
# unnormalised log p — here log p + 123, to show the constant does not matter. It is biased
# at finite K (a ratio of estimates), so we fit with K = 2 and with K = 64, starting from
# the reverse-KL fit on the left mode, and compare with the forward-KL fit from p's own samples.


# %%
def rws_loss(k):
    def loss(phi, key):
        unnormalised = lambda z: log_target(z) + 123.0  # noqa: E731
        return -vj.estimators.rws_wake_phi(key, unnormalised, make_q(phi), k).mean()

    return loss


start = reverse["start at m = −1"]
rws = {k: fit(rws_loss(k), dict(start)) for k in (2, 64)}
p_sd = float(zs.std())
for k, phi in rws.items():
    m, s = float(phi["m"][0]), float(jnp.exp(phi["log_s"][0]))
    print(f"wake-phi, K = {k:>2}: m = {m:+.3f}, s = {s:.3f}  (sd ratio s / sd(p) = {s / p_sd:.2f})")
s_rev = float(jnp.exp(start["log_s"][0]))
print(f"reverse KL start: s = {s_rev:.3f} (sd ratio {s_rev / p_sd:.2f}); sd(p) = {p_sd:.3f}")
s64 = float(jnp.exp(rws[64]["log_s"][0]))
s2 = float(jnp.exp(rws[2]["log_s"][0]))
assert abs(float(rws[64]["m"][0]) - float(zs.mean())) < 0.3  # near p's mean, between the modes
assert abs(s64 / p_sd - 1) < 0.15 and s64 > 2 * s_rev  # mass-covering
assert s2 < 0.5 * s64 and float(rws[2]["m"][0]) < -1.5  # K = 2 stays on its mode

# %%
fig, ax = plt.subplots(figsize=(7, 4))
ax.fill_between(grid, jnp.exp(target.log_prob(grid)), color="grey", alpha=0.3, label="target p(z)")
q = distrax.Normal(start["m"][0], jnp.exp(start["log_s"][0]))
ax.plot(grid, jnp.exp(q.log_prob(grid)), color="C0", label="reverse KL (ELBO), start")
for i, (k, phi) in enumerate(rws.items()):
    q = distrax.Normal(phi["m"][0], jnp.exp(phi["log_s"][0]))
    ax.plot(grid, jnp.exp(q.log_prob(grid)), color=f"C{i + 2}", label=f"wake-φ, K = {k}")
q = distrax.Normal(phi_fwd["m"][0], jnp.exp(phi_fwd["log_s"][0]))
ax.plot(grid, jnp.exp(q.log_prob(grid)), "k--", label="forward KL from samples of p")
ax.set_xlabel("z")
ax.set_ylabel("density")
ax.set_title("reweighted wake-sleep fits the forward KL from samples of q")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# With K = 64 the wake-φ fit leaves the mode it started on and lands on the forward-KL
# fit (its width matches sd(p), printed above), from samples of q alone; with K = 2 it
# stays on that mode, as narrow as the reverse-KL fit: two samples of a narrow q never see
# the other mode, the O(1/K) bias of self-normalised weights at its most visible. Reweighted wake-sleep trains
# encoders this way (`vi-jax train --objective rws`), discrete ones included.

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
# - On a correlated 2-D posterior, the mean-field reverse-KL q sits inside it (width
#   0.44 against the marginal 1), the forward-KL q around it.
# - Variational inference with the ELBO thus tends to give over-confident, mode-seeking
#   posteriors; importance-weighted bounds move the fit towards mass-covering: the IWAE
#   widths above grow with K from the ELBO's 0.44 past the marginal width 1. VI uses the reverse KL because it needs only samples of q and
#   the unnormalised log p(x, z).
# - Reweighted wake-sleep makes the forward KL practical with the same ingredients:
#   self-normalised importance weights from samples of q turn E_p[∇ log q] into a
#   (biased, consistent) estimate, and its K = 64 fit covers both modes.
#
# ## Try this
# Set `rho = 0.99` in the 2-D section. *Predict:* the reverse-KL width. (√(1 − 0.99²) ≈
# 0.14: the more correlated the posterior, the more over-confident the mean-field ELBO
# fit, while the forward-KL width stays 1.)
