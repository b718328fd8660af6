"""Precision fallback: a component planned in fp16 that yields NaN/Inf is retried once in fp32.

fp16's largest value is 65504; VAE decoders (SDXL's is the known case) overflow there and return
Inf or NaN where fp32 is fine. If the bundle holds an fp32 artifact of the same component, format
and variant, the pipeline reopens the component with it, reruns the call, keeps fp32 for the rest
of the run and records a note; otherwise the NumericalFaultError stands.
"""

from __future__ import annotations

from dataclasses import replace

from edge_sdk.bundle import Bundle
from edge_sdk.errors import UsageError
from edge_sdk.planning.plan import ComponentPlan

RETRYABLE = ("fp16",)


def fp32_fallback(bundle: Bundle, component: str, cp: ComponentPlan) -> ComponentPlan | None:
    """The plan entry to retry ``component`` with after a numerical fault, or None if there is none."""
    if cp.precision not in RETRYABLE:
        return None
    try:
        bundle.artifact(component, cp.format, "fp32", cp.variant)
    except UsageError:
        return None
    if cp.deep_cache and not bundle.stream_parts(component, cp.format, "fp32"):
        return replace(cp, precision="fp32", deep_cache=0)  # DeepCache needs fp32 parts: the whole model instead
    return replace(cp, precision="fp32")


def fallback_note(component: str, cp: ComponentPlan, bad: int, step: int | None) -> str:
    at = f"at step {step}" if step is not None else "in its call"
    return (f"{component}: {cp.precision} produced {bad} NaN/Inf values {at} ({cp.format} on {cp.runtime}); "
            f"retried in fp32 and kept fp32 for the rest of the run")
