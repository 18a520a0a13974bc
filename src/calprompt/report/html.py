"""One self-contained HTML report: contents, headline figures, tables, reliability grids as inline PNGs, run configs.

The file needs nothing but itself: images are ``data:`` URIs, the style sheet is inline, there is no script, and a
Content-Security-Policy meta tag (``default-src 'none'``) tells the browser to refuse any request the page might
otherwise make, so it opens from disk, offline, anywhere.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calprompt._io import write_atomic
from calprompt.report.cells import DELTA, NOT_APPLICABLE, Cell, Table, format_cell
from calprompt.report.tables import TABLE_LEGEND

# Everything is inline: no request may leave the page (images are data: URIs, the style sheet is a <style> block).
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; position: sticky; top: 0; }
td.best { background: #e3f4e1; font-weight: bold; }
td.delta, th.delta { color: #555; background: #fafafa; font-size: 0.92em; }
.ci { display: block; font-size: 0.8em; color: #666; font-weight: normal; }
.scroll { overflow-x: auto; max-width: 100%; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0.5em 0 1.5em; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; height: auto; }
nav.toc { background: #f7f7f7; padding: 0.5em 1.5em; margin-bottom: 1.5em; display: inline-block; }
nav.toc ul { margin: 0.2em 0; }
nav.toc ul ul { columns: 2; column-gap: 2em; }
pre { background: #f7f7f7; padding: 0.5em; font-size: 0.8em; overflow-x: auto; }
.failed { color: #a00; }
.note { font-size: 0.85em; color: #555; margin-top: -1em; }
"""


def anchor(kind: str, index: int) -> str:
    """The id of a section's n-th item (``table-3``, ``headline-0``): what the table of contents links to."""
    return f"{kind}-{index}"


def _cell_html(cell: Cell, best: bool) -> str:
    classes = [name for name, on in (("best", best), ("delta", cell.delta)) if on]
    attribute = f" class='{' '.join(classes)}'" if classes else ""
    if not cell.values:
        return f"<td{attribute}>{html.escape(cell.note)}</td>"
    text = html.escape(format_cell(cell.values) if not cell.delta else cell.text)
    interval = f"<span class='ci'>{html.escape(cell.interval_text)}</span>" if cell.interval_text else ""
    return f"<td{attribute}>{text}{interval}</td>"


def table_html(table: Table, anchor_id: str) -> str:
    """One table: the best value of each column in a ``best`` cell, differences in ``delta`` cells, one-run
    bootstrap intervals under their values."""
    best = table.best()
    head = "".join(
        f"<th{' class=delta' if title.startswith(DELTA) else ''}>{html.escape(title)}</th>" for title in table.columns
    )
    body = []
    for i, (label, cells) in enumerate(table.rows):
        tds = "".join(_cell_html(cell, (i, j) in best) for j, cell in enumerate(cells))
        body.append(f"<tr><th scope='row'>{html.escape(label)}</th>{tds}</tr>")
    return (
        f"<h3 id='{anchor_id}'>{html.escape(table.title)}</h3>\n<div class='scroll'><table class='results'><thead>"
        f"<tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        + "".join(f"<p class='note'>{NOT_APPLICABLE}: {html.escape(note)}</p>" for note in table.notes)
    )


def _figure_html(caption: str, png: Path, kind: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (
        f"<figure><img class='{kind}' src='data:image/png;base64,{data}' alt='{alt}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _config_html(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    blocks = []
    for name, config in runs:
        text = html.escape(json.dumps(config, indent=2, sort_keys=True))
        blocks.append(f"<details><summary>{html.escape(name)}</summary><pre>{text}</pre></details>")
    return "\n".join(blocks)


def _toc(entries: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> str:
    """A nested list of in-page links: (section id, title, [(item id, title)])."""
    items = []
    for section, title, children in entries:
        sub = "".join(f"<li><a href='#{i}'>{html.escape(t)}</a></li>" for i, t in children)
        items.append(f"<li><a href='#{section}'>{html.escape(title)}</a>{f'<ul>{sub}</ul>' if sub else ''}</li>")
    return f"<nav class='toc'><b>Contents</b><ul>{''.join(items)}</ul></nav>"


@dataclass(frozen=True)
class PageParts:
    """What the page shows beyond the tables: headline figures as (group title, [(caption, PNG)]), reliability
    grids as (caption, PNG), extra tables after the main ones (measured beside published) with the notes that go
    with them, failed runs and adapted settings as (run name, text), and every run config."""

    headline: Sequence[tuple[str, Sequence[tuple[str, Path]]]] = ()
    reliability: Sequence[tuple[str, Path]] = ()
    published: Sequence[Table] = ()
    published_notes: Sequence[str] = ()
    failures: Sequence[tuple[str, str]] = ()
    adapted: Sequence[tuple[str, str]] = ()
    configs: Sequence[tuple[str, Mapping[str, Any]]] = ()
    notes: Sequence[str] = field(default_factory=tuple)


def render_html_report(tables: Sequence[Table], parts: PageParts, *, title: str = "calprompt report") -> str:
    """The report page: contents, headline figures, tables, tables beside published ones, reliability grids, failed
    runs, adapted settings, then every run config folded (PNG files embedded as base64; no script, no request)."""
    toc, body = [], []
    if parts.headline:
        children = [(anchor("headline", i), group) for i, (group, _) in enumerate(parts.headline)]
        toc.append(("headline", "Headline figures", children))
        body.append("<h2 id='headline'>Headline figures</h2>")
        for i, (group, figures) in enumerate(parts.headline):
            shown = "".join(_figure_html(caption, png, "headline") for caption, png in figures)
            body.append(f"<h3 id='{anchor('headline', i)}'>{html.escape(group)}</h3><div class='row'>{shown}</div>")
    toc.append(("tables", "Tables", [(anchor("table", i), t.title) for i, t in enumerate(tables)]))
    legend = TABLE_LEGEND.replace("**bold**", "green").replace("`", "")  # Markdown's marks, said in HTML's words
    body += ["<h2 id='tables'>Tables</h2>", f"<p>{html.escape(legend)}</p>"]
    body += [table_html(table, anchor("table", i)) for i, table in enumerate(tables)]
    if parts.published:
        toc.append(("published", "Measured beside published", []))
        body.append("<h2 id='published'>Measured beside published</h2>")
        body.append("<ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in parts.published_notes) + "</ul>")
        body += [table_html(table, anchor("published", i)) for i, table in enumerate(parts.published)]
    if parts.reliability:
        children = [(anchor("reliability", i), caption) for i, (caption, _) in enumerate(parts.reliability)]
        toc.append(("reliability", "Reliability diagrams", children))
        body.append("<h2 id='reliability'>Reliability diagrams</h2>")
        for i, (caption, png) in enumerate(parts.reliability):
            body.append(f"<div id='{anchor('reliability', i)}'>{_figure_html(caption, png, 'reliability')}</div>")
    if parts.failures:
        toc.append(("failed", f"Failed runs ({len(parts.failures)})", []))
        items = "".join(f"<li><b>{html.escape(n)}</b>: <code>{html.escape(e)}</code></li>" for n, e in parts.failures)
        body.append(f"<h2 id='failed' class='failed'>Failed runs ({len(parts.failures)})</h2><ul>{items}</ul>")
    if parts.adapted:
        toc.append(("adapted", f"Adapted settings ({len(parts.adapted)})", []))
        items = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(note)}</li>" for n, note in parts.adapted)
        body.append(f"<h2 id='adapted'>Adapted settings ({len(parts.adapted)})</h2><ul>{items}</ul>")
    toc.append(("configs", f"Run configs ({len(parts.configs)})", []))
    body.append(f"<h2 id='configs'>Run configs ({len(parts.configs)})</h2>{_config_html(parts.configs)}")
    notes = "".join(f"<p>{html.escape(note)}</p>" for note in parts.notes)
    head = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>HM is the harmonic mean of base and novel accuracy. TS: temperature scaling fitted on the few-shot base"
        " validation split; DAC: distance-aware calibration of novel classes.</p>",
        notes,
        _toc(toc),
    ]
    return "\n".join([*head, *body, "</body></html>"]) + "\n"


def write_html_report(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """Write :func:`render_html_report` to ``path`` atomically and return it."""
    path = Path(path)
    text = render_html_report(*args, **kwargs)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path
