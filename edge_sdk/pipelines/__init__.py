"""Generation pipelines: the loops that tie samplers and seeded noise to runtime sessions."""

from __future__ import annotations

from edge_sdk.bundle import Bundle
from edge_sdk.pipelines.callbacks import StepCallback, StepInfo
from edge_sdk.pipelines.diffusion import DiffusionPipeline
from edge_sdk.pipelines.gan import GanPipeline
from edge_sdk.pipelines.result import GenerationResult
from edge_sdk.planning.plan import Plan

__all__ = ["DiffusionPipeline", "GanPipeline", "GenerationResult", "StepCallback", "StepInfo", "pipeline_for"]


def pipeline_for(bundle: Bundle, plan: Plan) -> DiffusionPipeline | GanPipeline:
    """The pipeline that runs ``bundle``'s kind of model: a GAN's, or the diffusion loop."""
    return GanPipeline(bundle, plan) if bundle.model.get("kind") == "gan" else DiffusionPipeline(bundle, plan)
