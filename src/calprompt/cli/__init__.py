"""The `calprompt` command line: thin commands that parse arguments and call the library.

Each sub-module defines the commands of one area; this module only assembles them.
"""

from calprompt.cli.main import app

__all__ = ["app"]
