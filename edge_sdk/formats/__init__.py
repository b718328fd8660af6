"""Model file formats: one descriptor module per format (suffix, structure check, converter).

Formats register through the ``edge_sdk.formats`` entry point group, the built-in ones included,
so a third-party package adds one with a descriptor module and one entry point (``registry.py``).
"""

from edge_sdk.formats.base import FormatSpec
from edge_sdk.formats.registry import default_format, format_for_path, format_names, get_format

__all__ = ["FormatSpec", "default_format", "format_for_path", "format_names", "get_format"]
