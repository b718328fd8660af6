"""An example third-party edge-sdk plugin: one runtime, one format, one converter."""
