"""One module per command; each exposes a click command (or group) named ``command``."""
