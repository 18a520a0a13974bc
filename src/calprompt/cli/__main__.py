"""``python -m calprompt.cli``."""

from calprompt.cli import app

app()
