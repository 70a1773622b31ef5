"""`python -m telescore` runs the CLI."""

from telescore.cli import app

app()
