"""Inference: evaluation, per-datapoint SVI, semi-amortised refinement, inference gaps."""

from vi_jax.inference import svi as svi
from vi_jax.inference.ais import (
    AISResult,
    BDMCResult,
    annealed_importance_sampling,
    annealing_schedule,
    bdmc,
    evaluate_ais,
    evaluate_bdmc,
    require_simulate,
    reverse_ais,
)
from vi_jax.inference.evaluate import (
    Evaluation,
    default_sample_chunk,
    evaluate_model,
    model_active_units,
)
from vi_jax.inference.evaluate import active_units as active_units  # the old name
from vi_jax.inference.gaps import gaps_table, inference_gaps
from vi_jax.inference.refine import refine, refine_view
from vi_jax.inference.svi import SVIState, fit_local, make_q, svi_theta_step
from vi_jax.types import ModelView

__all__ = [
    "AISResult",
    "BDMCResult",
    "Evaluation",
    "ModelView",
    "SVIState",
    "annealed_importance_sampling",
    "annealing_schedule",
    "bdmc",
    "default_sample_chunk",
    "evaluate_ais",
    "evaluate_bdmc",
    "evaluate_model",
    "fit_local",
    "gaps_table",
    "inference_gaps",
    "make_q",
    "model_active_units",
    "refine",
    "refine_view",
    "require_simulate",
    "reverse_ais",
    "svi",
    "svi_theta_step",
]
