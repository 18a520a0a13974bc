"""The HTML report opened by headless Chromium: tables and images render, and the page makes no request.

What is verified, and how:
- the DOM after load (``--dump-dom``) holds one ``<table>`` per table and one ``<img>`` per figure, each a PNG
  ``data:`` URI, and the table cells hold the values of the Markdown tables;
- the images are decoded and painted: a screenshot of the page has pixels of the diagrams' bar colour
  (matplotlib's tab:blue), and a screenshot of the same page without its images has none;
- no request leaves the page: Chromium's own network log (``--log-net-log``) lists no URL requested on behalf of
  the page. The same check on a control page holding one ``http://`` image does find that request, so the check
  can fail. Requests the browser makes for itself (component updates) are not the page's and are left out.
Statically, the page carries a Content-Security-Policy of ``default-src 'none'`` and no http(s) URL in any
``src``/``href`` attribute or CSS ``url()``.
"""

from __future__ import annotations

import re

import pytest

from calprompt.report.build import write_report
from tests.report.chromium import blue_pixels, needs_chromium, open_page, page_requests
from tests.report.stored_runs import grid_runs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_report(grid_runs(datasets=("toy",), seeds=(1, 2)), tmp_path_factory.mktemp("report"))


def test_html_is_self_contained(report):
    text = report.html.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    links = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", text) + re.findall(r"url\(([^)]*)\)", text)
    # images are data: URIs; the only other links are the table of contents' in-page anchors
    assert links and all(link.startswith(("data:image/png;base64,", "#")) for link in links)
    anchors = [link[1:] for link in links if link.startswith("#")]
    assert anchors and all(f"id='{name}'" in text for name in anchors)
    assert "<script" not in text


@needs_chromium
def test_chromium_renders_tables_and_images_and_makes_no_request(report, tmp_path):
    dom, shot, netlog = open_page(report.html, tmp_path / "report")
    assert dom.count("<table") == len(report.tables) and dom.count("<img") == len(report.figures) > 0
    assert len(re.findall(r"<img class=\"\w+\" src=\"data:image/png;base64,", dom)) == len(report.figures)
    summary = report.tables[0]
    for label, cells in summary.rows:
        assert f">{label}</th>" in dom and all(cell.text.split(" [")[0] in dom for cell in cells)
    assert blue_pixels(shot) > 1000
    assert page_requests(netlog) == set()

    # control: the same page without its images paints no tab:blue, and an http image is seen in the network log
    text = report.html.read_text(encoding="utf-8")
    text = re.sub(r"<meta http-equiv='Content-Security-Policy'[^>]*>", "", text)
    text = re.sub(r"<img [^>]*>", "", text).replace("<body>", "<body><img src='http://127.0.0.1:9/x.png'>", 1)
    control = tmp_path / "control.html"
    control.write_text(text, encoding="utf-8")
    _, control_shot, control_log = open_page(control, tmp_path / "control")
    assert blue_pixels(control_shot) == 0
    assert "http://127.0.0.1:9/x.png" in page_requests(control_log)


def test_a_run_that_adapted_a_setting_is_named_under_the_tables(tmp_path):
    """A degenerate temperature fit (T = 1 used instead) is listed in report.md and report.html with its reason,
    and a report of runs that adapted nothing has no such section."""
    runs = grid_runs(datasets=("toy",), seeds=(1,))
    plain = write_report(runs, tmp_path / "plain")
    assert "Adapted settings" not in plain.markdown.read_text() and "Adapted settings" not in plain.html.read_text()
    why = "degenerate fit (no finite optimum): the fit ended at T = 3.1e+10; T = 1 used (no scaling)"
    runs[1].metrics["adapted"] = {"ts": why}
    files = write_report(runs, tmp_path / "adapted")
    name = f"{runs[1].path.name}: toy / {runs[1].config['method']} + {runs[1].config['calibration']} / seed 1"
    assert f"### Adapted settings\n\n- {name}: ts: {why}\n" in files.markdown.read_text()
    assert (
        "<h2 id='adapted'>Adapted settings (1)</h2>" in files.html.read_text()
        and "T = 3.1e+10" in files.html.read_text()
    )
