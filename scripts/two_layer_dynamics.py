"""Early training of the one- and two-stochastic-layer VAEs: reconstruction and KL per step.

    python scripts/two_layer_dynamics.py --model two-layer --lr 1e-3 --steps 1000
    python scripts/two_layer_dynamics.py --model one-layer --lr 1e-3 --steps 1000 --beta 0

Adam on the first 20,000 MNIST training images (dynamically binarised), batch 100, the
ELBO (pathwise, K = 1) weighted as beta * ELBO + (1 - beta) * recon; prints the mean
reconstruction term and KL(q || p) (Monte Carlo) of each block of 200 steps. A quick look
at why the two-layer model falls behind at a CPU budget (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import vi_jax.estimators as vie
from vi_jax.data.mnist import load_mnist
from vi_jax.models import make_mlp_vae, make_two_layer_vae, make_vae_loss, split_params


def main() -> None:
    """Parses the options, trains, prints one line per 200 steps."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", choices=["one-layer", "one-layer-100", "two-layer"])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--beta", type=float, default=1.0, help="KL weight (0: reconstruction)")
    ap.add_argument("--min-scale", type=float, default=1e-4)
    args = ap.parse_args()
    images = load_mnist("train", offline=True).images[:20000]
    data = jnp.asarray(images / 255.0, jnp.float32)
    if args.model == "two-layer":
        vae = make_two_layer_vae(
            784, (100, 50), ((200, 200), (100, 100)), "tanh", rngs=0, min_scale=args.min_scale
        )
    else:
        latent = 100 if args.model == "one-layer-100" else 50
        vae = make_mlp_vae(
            data_dim=784,
            latent_dim=latent,
            hidden=(200, 200),
            activation="tanh",
            rngs=0,
            min_scale=args.min_scale,
        )
    graphdef, params, rest = split_params(vae)
    loss = make_vae_loss(
        graphdef, vie.elbo_pathwise, num_samples=1, rest=rest, monitor=True, beta=args.beta
    )
    opt = optax.adam(args.lr, eps=1e-4)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        k_idx, k_bin, k_loss = jax.random.split(key, 3)
        idx = jax.random.choice(k_idx, data.shape[0], (100,))
        x = (jax.random.uniform(k_bin, (100, 784)) < data[idx]).astype(jnp.float32)
        (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(params, x, k_loss)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, aux

    start, seen = time.perf_counter(), []
    for i in range(args.steps):
        params, state, aux = step(params, state, jax.random.key(i))
        seen.append((float(aux["recon"]), float(aux["kl"])))
        if (i + 1) % 200 == 0:
            recon, kl = np.mean(seen[-200:], axis=0)
            wall = time.perf_counter() - start
            print(
                f"{args.model} lr={args.lr:g} step {i + 1}: recon {recon:.1f} KL {kl:.1f} "
                f"({wall:.0f} s)"
            )


if __name__ == "__main__":
    main()
