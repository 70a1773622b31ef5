"""Validation tools behind one interface (`base.Validator`): each adapter returns a report.

Each tool is imported only inside its own adapter modules: their APIs break between releases.
"""
