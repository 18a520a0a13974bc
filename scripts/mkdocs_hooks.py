"""MkDocs hook: Sphinx roles in docstrings (``:class:`X` ``, ``:mod:`x` ``) rendered as plain code.

The docstrings use Sphinx's roles, which mkdocstrings does not read: they would show as ``:class:`` before the name.
Listed under ``hooks`` in mkdocs.yml.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):(<code>)")


def on_page_content(html: str, **kwargs: object) -> str:
    return _ROLE.sub(r"\1", html)
