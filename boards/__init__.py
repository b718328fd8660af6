"""Board profiles (data): one TOML file per board, read by ``edge_sdk.planning.board`` (which documents
the fields)."""
