import jax.numpy as jnp
import pytest

from vi_jax.estimators.problems import LinearGaussian


@pytest.fixture(scope="session")
def fixed_model():
    """LinearGaussian with fixed weights (as in tests/inference): 5 observed, 2 latent
    dimensions, a correlated posterior."""
    w = jnp.array([[1.0, 0.8], [0.5, 1.0], [1.0, 0.6], [0.2, 0.9], [0.7, 0.7]])
    return LinearGaussian(w, jnp.array([0.1, -0.2, 0.3, 0.0, 0.5]), jnp.asarray(0.7))
