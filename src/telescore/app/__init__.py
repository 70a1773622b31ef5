"""The telescore HTTP API: a FastAPI app factory, its dependencies and one router per module."""
