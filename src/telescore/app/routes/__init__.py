"""The API's routers, one per module: each has its prefix and tag, and only parses and answers."""
