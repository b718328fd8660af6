"""edge-sdk's own exception types.

Every error a user can hit is one of these. The message says what went wrong, where (file, field,
component) and what to do; the CLI prints it on one line and exits with ``exit_code``.
"""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Base of every error edge-sdk raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class UsageError(EdgeSDKError):
    """A bad option, an unknown name, a value out of range."""

    exit_code = 2


class BundleError(EdgeSDKError):
    """A bundle folder that is missing, incomplete or malformed."""

    exit_code = 3


class ManifestError(BundleError):
    """manifest.json does not follow the schema."""


class IntegrityError(BundleError):
    """A file whose size or sha256 differs from what the manifest records."""


class UnsafePathError(BundleError):
    """A path that would leave the bundle or archive (absolute, '..', link)."""


class ModelFileError(BundleError):
    """A model file that its runtime cannot parse (truncated, corrupt, wrong format)."""


class ConversionError(EdgeSDKError):
    """A model that could not be converted to a format."""

    exit_code = 4


class UnsupportedOpError(ConversionError):
    """An operator that a target format cannot express."""


class ValidationError(ConversionError):
    """A converted artifact whose outputs differ from PyTorch beyond the tolerance."""


class ModelSourceError(ConversionError):
    """A model source (entry point, .pt2, diffusers folder, checkpoint) that cannot be loaded."""


class RuntimeUnavailableError(EdgeSDKError):
    """A runtime, execution provider or device that is asked for but not installed here."""

    exit_code = 5


class InputError(EdgeSDKError):
    """Inputs whose names, shapes or dtypes do not match a model's signature."""

    exit_code = 2


class InferenceError(EdgeSDKError):
    """A runtime failed while running a model."""

    exit_code = 6


class NumericalFaultError(InferenceError):
    """NaN or Inf in a component's output."""


class SupervisedProcessError(InferenceError):
    """A supervised child process died (native crash, OOM kill) or timed out."""


class PlanError(EdgeSDKError):
    """No plan fits the board's memory cap, or a board profile is invalid."""

    exit_code = 7


class MemoryCapError(PlanError):
    """A run crossed the memory cap it was given."""

    @classmethod
    def from_memory_error(cls, e: MemoryError) -> MemoryCapError:
        """The one wording for an allocation too big for this machine (the API's and the CLI's)."""
        first = str(e).splitlines()[0] if str(e) else "MemoryError"
        return cls(f"not enough memory for this run ({first})",
                   hint="use a smaller --size or --batch, or a plan for this board with tiled decoding")


class CancelledError(EdgeSDKError):
    """A run stopped by its callback."""

    exit_code = 130


class DeployError(EdgeSDKError):
    """Packaging, flashing, installing or rolling back failed."""

    exit_code = 8
