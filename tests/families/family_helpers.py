import jax
import jax.numpy as jnp
from flax import nnx


def randomise(family, key, scale=0.3):
    """Perturbs every weight of a flow family in place (zero-initialised layers included),
    so that tests see a non-trivial flow rather than the near-identity it starts at."""
    _, state = nnx.split(family)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(key, max(len(leaves), 1))
    new = [
        x + scale * jax.random.normal(k, x.shape, x.dtype)
        for x, k in zip(leaves, keys, strict=True)
    ]
    nnx.update(family, jax.tree.unflatten(tree, new))
    return family


def random_params(key, batch, family, scale=0.5):
    return scale * jax.random.normal(key, (batch, family.param_size), jnp.result_type(float))
