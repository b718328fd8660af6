"""`edge-sdk serve`: one loaded Generator behind an HTTP API (OpenAI images + Open Inference Protocol v2)."""

from edge_sdk.serve.app import ServeConfig, build_app
from edge_sdk.serve.limits import Limits, limits_for

__all__ = ["Limits", "ServeConfig", "build_app", "limits_for"]
