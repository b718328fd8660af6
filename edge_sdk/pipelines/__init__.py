"""Generation pipelines: the loop that ties a sampler to runtime sessions."""

from edge_sdk.pipelines.diffusion import DiffusionPipeline, StepInfo
from edge_sdk.pipelines.result import GenerationResult

__all__ = ["DiffusionPipeline", "GenerationResult", "StepInfo"]
