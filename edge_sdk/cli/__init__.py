"""The `edge-sdk` command line: a thin shell over the Python API."""
