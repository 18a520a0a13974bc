"""`calprompt demo --quick` end to end: the table is printed, the report written, and Chromium renders it offline."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from calprompt.cli import app
from calprompt.report.tables import EXTRA_QUANTITIES
from tests.report.chromium import blue_pixels, needs_chromium, open_page, page_requests

pytestmark = needs_chromium


def test_quick_demo_prints_the_table_and_writes_a_report_chromium_renders(toy_weights, tmp_path, cache_env):
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--executor", "serial", "--quiet", "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--set", f"pretrained={toy_weights}", "--set", "epochs=1", "--set", "warmup_epochs=0"]
    )
    assert result.exit_code == 0, result.output
    for label in ("zeroshot", "coop", "coop + ours", "coop + TS", "base acc", "novel ECE", "toy -> toy-domain"):
        assert label in result.output
    html = out / "report" / "report.html"
    assert f"HTML report: {html}" in result.output
    figures = sorted((out / "report" / "figures").glob("*.png"))
    assert [f.name for f in figures] == [
        "headline-0-ece.png",
        "headline-0-movement.png",
        "reliability-toy-coop-base.png",
        "reliability-toy-coop-novel.png",
        "reliability-toy-zeroshot-base.png",
        "reliability-toy-zeroshot-novel.png",
    ]
    dom, shot, netlog = open_page(html, tmp_path / "chromium")
    tables = 1 + len(EXTRA_QUANTITIES) + 2  # the summary, PIECE / sample-weighted MCE / macro-F1, transfer acc / ECE
    assert dom.count("<table") == tables and len(
        re.findall(r"<img class=\"\w+\" src=\"data:image/png;base64,", dom)
    ) == len(figures)
    assert blue_pixels(shot) > 1000 and page_requests(netlog) == set()
    assert "200 resamples" in dom  # the demo's intervals come from fewer resamples than a run's default: said

    again = CliRunner().invoke(
        app, [*args, "--set", f"pretrained={toy_weights}", "--set", "epochs=1", "--set", "warmup_epochs=0"]
    )
    assert again.exit_code == 0 and "skipped 3" in again.output  # a second demo reuses the finished runs

    # `calprompt report` on the demo's store writes the same tables elsewhere
    report = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "again")])
    assert report.exit_code == 0, report.output
    assert "3 runs" in report.output and "coop + ours" in report.output
    written = (tmp_path / "again" / "report.md").read_text(encoding="utf-8")
    assert written.split("\n", 1)[1] == (out / "report" / "report.md").read_text(encoding="utf-8").split("\n", 1)[1]
    assert (tmp_path / "again" / "report.csv").read_text() == (out / "report" / "report.csv").read_text()
