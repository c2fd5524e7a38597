"""vi_jax: latent-variable models and variational inference in JAX.

`import vi_jax as vj` gives the names a user composes with, one per concept; everything
else (building blocks, result types, teaching tables, internals) stays in its layer:
`vj.estimators`, `vj.diagnostics`, `vj.families`, `vj.inference`, `vj.models`, `vj.training`,
`vj.data`, and the contracts in `vj.types`. docs/ARCHITECTURE.md describes the layers.
"""

from vi_jax import data as data
from vi_jax import diagnostics as diagnostics
from vi_jax import estimators as estimators
from vi_jax import families as families
from vi_jax import inference as inference
from vi_jax import models as models
from vi_jax import training as training
from vi_jax import types as types

# Diagnostics.
from vi_jax.diagnostics.gradient_variance import gradient_statistics as gradient_statistics
from vi_jax.diagnostics.importance_weights import weight_diagnostics as weight_diagnostics
from vi_jax.diagnostics.latent import kl_per_dimension as kl_per_dimension
from vi_jax.diagnostics.latent import latent_activity as latent_activity

# Bounds: one value per data point, `[*batch]`.
from vi_jax.estimators.bounds import cubo as cubo
from vi_jax.estimators.bounds import elbo as elbo
from vi_jax.estimators.bounds import elbo_entropy as elbo_entropy
from vi_jax.estimators.bounds import elbo_kl as elbo_kl
from vi_jax.estimators.bounds import iwae_bound as iwae_bound
from vi_jax.estimators.bounds import kl_divergence as kl_divergence
from vi_jax.estimators.bounds import renyi_bound as renyi_bound

# Control variates.
from vi_jax.estimators.control_variates import with_control_variate as with_control_variate

# Exact answers by enumeration.
from vi_jax.estimators.enumeration import enumerate_log_marginal as enumerate_log_marginal

# Gradient estimators: surrogates whose value is the bound and whose gradient the estimator's.
from vi_jax.estimators.gradients import elbo_pathwise as elbo_pathwise
from vi_jax.estimators.gradients import elbo_score_function as elbo_score_function
from vi_jax.estimators.gradients import elbo_score_function_loo as elbo_score_function_loo
from vi_jax.estimators.gradients import elbo_stl as elbo_stl
from vi_jax.estimators.gradients import iwae_dreg as iwae_dreg
from vi_jax.estimators.gradients import iwae_pathwise as iwae_pathwise
from vi_jax.estimators.gradients import iwae_stl as iwae_stl
from vi_jax.estimators.gradients import renyi_pathwise as renyi_pathwise
from vi_jax.estimators.gradients import vimco as vimco

# Marginal likelihood and posterior expectations by (self-normalised) importance sampling.
from vi_jax.estimators.importance import importance_log_marginal as importance_log_marginal
from vi_jax.estimators.importance import snis_expectation as snis_expectation

# Monte Carlo.
from vi_jax.estimators.monte_carlo import mc_expectation as mc_expectation

# Reference problem with closed forms (log p(x), posterior, ELBO and its gradient).
from vi_jax.estimators.problems import make_linear_gaussian as make_linear_gaussian

# The estimator registry (what the CLI, TrainConfig and the benchmarks read).
from vi_jax.estimators.registry import EstimatorSpec as EstimatorSpec
from vi_jax.estimators.registry import get_estimator as get_estimator

# Importance-weight health.
from vi_jax.estimators.weights import effective_sample_size as effective_sample_size
from vi_jax.estimators.weights import pareto_khat as pareto_khat

# Inference and evaluation.
from vi_jax.inference.evaluate import Evaluation as Evaluation
from vi_jax.inference.evaluate import evaluate_model as evaluate_model
from vi_jax.inference.evaluate import model_active_units as model_active_units
from vi_jax.inference.gaps import inference_gaps as inference_gaps
from vi_jax.inference.refine import refine as refine
from vi_jax.inference.svi import fit_local as fit_local

# Models (Flax NNX) and the bridge to the estimators.
from vi_jax.models.functional import merge_params as merge_params
from vi_jax.models.functional import split_params as split_params
from vi_jax.models.loss import make_vae_loss as make_vae_loss
from vi_jax.models.vae import VAE as VAE
from vi_jax.models.vae import iwae_paper_vae as iwae_paper_vae
from vi_jax.models.vae import make_conv_vae as make_conv_vae
from vi_jax.models.vae import make_mlp_vae as make_mlp_vae
from vi_jax.models.vae import pytorch_example_vae as pytorch_example_vae
from vi_jax.models.view import vae_view as vae_view

# Training.
from vi_jax.training.checkpoint import restore_checkpoint as restore_checkpoint
from vi_jax.training.epoch import make_epoch_fn as make_epoch_fn
from vi_jax.training.loop import NonFiniteLossError as NonFiniteLossError
from vi_jax.training.loop import fit as fit
from vi_jax.training.state import TrainState as TrainState
from vi_jax.training.state import init_train_state as init_train_state
from vi_jax.training.step import make_train_step as make_train_step
from vi_jax.types import ModelView as ModelView

__version__ = "0.1.0"

__all__ = [
    # Layers and contracts.
    "data",
    "diagnostics",
    "estimators",
    "families",
    "inference",
    "models",
    "training",
    "types",
    # Bounds.
    "cubo",
    "elbo",
    "elbo_entropy",
    "elbo_kl",
    "iwae_bound",
    "kl_divergence",
    "renyi_bound",
    # Gradient estimators and their registry.
    "EstimatorSpec",
    "elbo_pathwise",
    "elbo_score_function",
    "elbo_score_function_loo",
    "elbo_stl",
    "get_estimator",
    "iwae_dreg",
    "iwae_pathwise",
    "iwae_stl",
    "renyi_pathwise",
    "vimco",
    "with_control_variate",
    # Marginals, expectations, reference problem.
    "enumerate_log_marginal",
    "importance_log_marginal",
    "make_linear_gaussian",
    "mc_expectation",
    "snis_expectation",
    # Diagnostics.
    "effective_sample_size",
    "gradient_statistics",
    "kl_per_dimension",
    "latent_activity",
    "pareto_khat",
    "weight_diagnostics",
    # Models.
    "ModelView",
    "VAE",
    "iwae_paper_vae",
    "make_conv_vae",
    "make_mlp_vae",
    "make_vae_loss",
    "merge_params",
    "pytorch_example_vae",
    "split_params",
    "vae_view",
    # Training.
    "NonFiniteLossError",
    "TrainState",
    "fit",
    "init_train_state",
    "make_epoch_fn",
    "make_train_step",
    "restore_checkpoint",
    # Inference and evaluation.
    "Evaluation",
    "evaluate_model",
    "fit_local",
    "inference_gaps",
    "model_active_units",
    "refine",
]
