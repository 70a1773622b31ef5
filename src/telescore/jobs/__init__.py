"""Plain functions that compose core logic and io adapters; flows, the app and the CLI call them."""
