"""``python -m calprompt``: the same command line as ``calprompt``."""

from calprompt.cli import app

app(prog_name="calprompt")
