"""Host-side converters (installed as ``edge_sdk.converters``): torch in, verified artifacts out.

One module per format behind the ``Converter`` interface (``base.py``), registered in
``registry.py``; model sources in ``sources.py``; validation against PyTorch in ``validate.py``;
the orchestration that writes a bundle in ``convert.py``.
"""
