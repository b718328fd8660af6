"""Fleets: deploy a bundle to many boards through Ansible (the collection ships in this package)."""

from __future__ import annotations

from pathlib import Path

COLLECTION_NAME = "edge_sdk.fleet"


def collections_path() -> Path:
    """The folder to put on ANSIBLE_COLLECTIONS_PATH (it holds ``ansible_collections/edge_sdk/fleet``)."""
    return Path(__file__).resolve().parent


def collection_dir() -> Path:
    """The collection itself (galaxy.yml, roles/, playbooks/, plugins/)."""
    return collections_path() / "ansible_collections" / "edge_sdk" / "fleet"


def playbook(name: str) -> Path:
    """A playbook shipped with the collection: ``deploy`` or ``status``."""
    return collection_dir() / "playbooks" / f"{name}.yml"
