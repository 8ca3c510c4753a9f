"""One module per ``karmic`` subcommand; each defines ``register(app)``. See ``_common`` for the
shared error handling (one line on stderr, exit code 2, never a traceback)."""
