"""Inference: evaluation of trained models (and, later, per-datapoint SVI)."""

from vi_jax.inference.evaluate import Evaluation, ModelView, active_units, evaluate_model

__all__ = ["Evaluation", "ModelView", "active_units", "evaluate_model"]
