"""Offline studies: research tools that start no services (see studies/README.md)."""
