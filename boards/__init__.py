"""Board profiles (data): one TOML file per board, read by ``edge_sdk.board``. See docs in edge_sdk/board.py."""
