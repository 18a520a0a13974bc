"""One self-contained HTML report: tables, reliability diagrams as inline PNGs and the run configs.

The file needs nothing but itself: images are ``data:`` URIs, the style sheet is inline, there is no script, and a
Content-Security-Policy meta tag (``default-src 'none'``) tells the browser to refuse any request the page might
otherwise make, so it opens from disk, offline, anywhere.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from calprompt._io import write_atomic
from calprompt.report.tables import NOT_APPLICABLE, Table

# Everything is inline: no request may leave the page (images are data: URIs, the style sheet is a <style> block).
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.5em; font-size: 0.8em; overflow-x: auto; }
.failed { color: #a00; }
.note { font-size: 0.85em; color: #555; margin-top: -1em; }
"""


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(column)}</th>" for column in table.columns)
    body = []
    for label, cells in table.rows:
        tds = "".join(f"<td>{html.escape(cell.text)}</td>" for cell in cells)
        body.append(f"<tr><th scope='row'>{html.escape(label)}</th>{tds}</tr>")
    return (
        f"<h3>{html.escape(table.title)}</h3>\n<table class='results'><thead><tr><th></th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
        + "".join(f"<p class='note'>{NOT_APPLICABLE}: {html.escape(note)}</p>" for note in table.notes)
    )


def _figure_html(caption: str, png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (
        f"<figure><img src='data:image/png;base64,{data}' alt='{alt}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _config_html(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    blocks = []
    for name, config in runs:
        text = html.escape(json.dumps(config, indent=2, sort_keys=True))
        blocks.append(f"<details><summary>{html.escape(name)}</summary><pre>{text}</pre></details>")
    return "\n".join(blocks)


def render_html_report(
    tables: Sequence[Table],
    figures: Sequence[tuple[str, Path]],
    configs: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    title: str = "calprompt report",
    failures: Sequence[tuple[str, str]] = (),
    adapted: Sequence[tuple[str, str]] = (),
) -> str:
    """The report page: tables, then reliability diagrams (PNG files embedded as base64), then every run config.

    ``configs`` are (run name, config dict) pairs; ``failures`` (run name, error message) pairs of runs that failed;
    ``adapted`` (run name, what the run used other than asked and why, e.g. a temperature-scaling fallback).
    """
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Accuracy and ECE in %, mean ± sample std over seeds; HM is the harmonic mean of base and novel accuracy."
        " TS: temperature scaling fitted on the few-shot base validation split; DAC: distance-aware calibration of"
        " novel classes.</p>",
        "<h2>Tables</h2>",
        *(_table_html(table) for table in tables),
    ]
    if figures:
        parts += ["<h2>Reliability diagrams</h2>", *(_figure_html(caption, png) for caption, png in figures)]
    if failures:
        items = "".join(f"<li><b>{html.escape(n)}</b>: <code>{html.escape(e)}</code></li>" for n, e in failures)
        parts += [f"<h2 class='failed'>Failed runs ({len(failures)})</h2><ul>{items}</ul>"]
    if adapted:
        items = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(note)}</li>" for n, note in adapted)
        parts += [f"<h2>Adapted settings ({len(adapted)})</h2><ul>{items}</ul>"]
    parts += [f"<h2>Run configs ({len(configs)})</h2>", _config_html(configs), "</body></html>"]
    return "\n".join(parts) + "\n"


def write_html_report(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """Write :func:`render_html_report` to ``path`` atomically and return it."""
    path = Path(path)
    text = render_html_report(*args, **kwargs)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path
