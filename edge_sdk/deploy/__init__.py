"""Packaging, installing, rolling back and flashing bundles to boards."""
