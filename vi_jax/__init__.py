"""vi_jax: latent-variable models and variational inference in JAX.

The public API is re-exported here; each layer is also importable on its own
(`vi_jax.estimators`, `vi_jax.diagnostics`, `vi_jax.inference`, `vi_jax.models`,
`vi_jax.training`, `vi_jax.data`).
"""

from vi_jax import data as data
from vi_jax import diagnostics as diagnostics
from vi_jax import estimators as estimators
from vi_jax import families as families
from vi_jax import inference as inference
from vi_jax import models as models
from vi_jax import training as training
from vi_jax.estimators import *  # noqa: F403
from vi_jax.estimators import __all__ as _estimators_all
from vi_jax.inference import *  # noqa: F403
from vi_jax.inference import __all__ as _inference_all
from vi_jax.models import *  # noqa: F403
from vi_jax.models import __all__ as _models_all
from vi_jax.training import *  # noqa: F403
from vi_jax.training import __all__ as _training_all

__version__ = "0.1.0"

__all__ = sorted(
    {*_estimators_all, *_inference_all, *_models_all, *_training_all}
    | {"data", "diagnostics", "estimators", "inference", "models", "training"}
)
