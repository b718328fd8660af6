"""Measuring on this machine: benchmark runs of plans (`bench`), the tuner that keeps the fastest
plan meeting a quality bar (`tune`), and process memory readings (`memory`)."""
