"""Validation tools behind one interface: each adapter returns a `ValidationReport`.

Each tool is imported only inside its own adapter module: their APIs break between releases.
"""
