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
from vi_jax.models import (
    init_decoder_bias,
    make_mlp_vae,
    make_two_layer_vae,
    make_vae_loss,
    split_params,
    vae_view,
)


def main() -> None:
    """Parses the options, trains, prints one line per 200 steps."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", choices=["one-layer", "one-layer-100", "two-layer"])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--beta", type=float, default=1.0, help="KL weight (0: reconstruction)")
    ap.add_argument("--min-scale", type=float, default=1e-4)
    ap.add_argument("--train-images", type=int, default=20000, help="first N training images")
    ap.add_argument("--eval-examples", type=int, default=0, help="test images for IS (0: none)")
    ap.add_argument("--eval-samples", type=int, default=5000, help="K of the IS estimate")
    ap.add_argument("--save", default=None, help="write the per-image log-likelihoods (.npy)")
    ap.add_argument(
        "--mean-bias",
        action="store_true",
        help="start the decoder's output bias at the logit of the mean training image",
    )
    args = ap.parse_args()
    images = load_mnist("train", offline=True).images[: args.train_images]
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
    if args.mean_bias:  # what `vi-jax train --decoder-bias mean` does
        init_decoder_bias(vae, data)
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
    if args.eval_examples:
        _evaluate(args, graphdef, params, rest)


def _evaluate(args, graphdef, params, rest) -> None:
    """IS log-likelihood (L_K) of the first test images, binarised once with a fixed key."""
    test = jnp.asarray(load_mnist("test", offline=True).images[: args.eval_examples] / 255.0)
    x_test = (jax.random.uniform(jax.random.key(123), test.shape) < test).astype(jnp.float32)
    view = vae_view(graphdef, rest)

    @jax.jit
    def chunk(key, x):
        m = view(params, x)
        return vie.iwae_bound(key, m.log_joint, m.posterior, args.eval_samples)

    start = time.perf_counter()
    ll = np.concatenate(
        [
            np.asarray(chunk(jax.random.key(1000 + i), x_test[i : i + 10]))
            for i in range(0, len(x_test), 10)
        ]
    )
    wall = time.perf_counter() - start
    se = ll.std(ddof=1) / np.sqrt(len(ll))
    print(
        f"test log-likelihood (IS K={args.eval_samples}, {len(ll)} images): "
        f"{ll.mean():.2f} +- {se:.2f} ({wall:.0f} s)"
    )
    if args.save:
        np.save(args.save, ll)


if __name__ == "__main__":
    main()
