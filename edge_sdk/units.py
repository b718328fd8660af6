"""Units the whole SDK counts in (one definition, so a figure means the same everywhere)."""

MB = 1024 * 1024  # bytes in a mebibyte: every "MB" edge-sdk prints or reads is this
