"""Class labels for class-conditional models: checked against the bundle, one per batch row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_sdk.errors import UsageError


def class_labels_for(model: dict[str, Any], class_labels: Sequence[int] | int | None, batch: int) -> np.ndarray | None:
    """int64 labels of shape (batch,), or None for a model without class conditioning.

    No labels given: rows cycle through the classes (0, 1, 2, ...), so a batch shows the range.
    """
    if model.get("conditioning") != "class":
        if class_labels is not None:
            raise UsageError("this model is not class-conditional; do not pass class labels")
        return None
    if model.get("num_classes") is None:
        raise UsageError("the bundle declares class conditioning but no num_classes",
                         hint="convert the model again with model['num_classes'] set")
    n = int(model["num_classes"])
    if class_labels is None:
        return (np.arange(batch) % n).astype(np.int64)
    raw = np.atleast_1d(np.asarray(class_labels))
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise UsageError(f"class labels must be integers, got {np.asarray(class_labels).tolist()!r}")
    labels = raw.astype(np.int64)
    if labels.shape != (batch,):
        raise UsageError(f"{labels.size} class labels for a batch of {batch}",
                         hint="give one label per image, or leave batch unset")
    if labels.min() < 0 or labels.max() >= n:
        names = model.get("class_names")
        hint = f"classes: {', '.join(f'{i}={s}' for i, s in enumerate(names))}" if names else None
        raise UsageError(f"class labels must be in 0..{n - 1}, got {labels.tolist()}", hint=hint)
    return labels


def null_labels_for(model: dict[str, Any], labels: np.ndarray) -> np.ndarray:
    """The unconditional branch of classifier-free guidance: the bundle's null class on every row."""
    null = model.get("null_class")
    if null is None:
        raise UsageError("this model has no null class, so classifier-free guidance is not possible",
                         hint="use guidance 1.0")
    return np.full_like(labels, int(null))
