"""Device-side runtime adapters (installed as ``edge_sdk.runtimes``).

Each engine is one module behind the ``Runtime`` interface in ``base.py``; engines register through
the ``edge_sdk.runtimes`` entry point group (see ``registry.py``), the built-in ones included.
"""

from edge_sdk.runtimes.base import Runtime
from edge_sdk.runtimes.registry import available_runtimes, get_runtime, open_artifact

__all__ = ["Runtime", "available_runtimes", "get_runtime", "open_artifact"]
