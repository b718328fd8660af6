"""Deploying bundles to boards: ``package`` (host), ``install`` / ``rollback`` (device),
``flash`` (host -> board over SSH).

See docs/deploy.md. The device side (install, rollback) needs no torch and no network.
"""

from __future__ import annotations

from edge_sdk.deploy.install import current_release, install, list_releases, read_package, rollback
from edge_sdk.deploy.package import package

__all__ = ["package", "install", "rollback", "read_package", "current_release", "list_releases", "flash"]


def flash(*args, **kwargs):
    """Upload a package to a board over SSH and install it there. See ``edge_sdk.deploy.flash.flash``."""
    from edge_sdk.deploy.flash import flash as _flash

    return _flash(*args, **kwargs)
