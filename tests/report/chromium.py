"""Headless Chromium for the report tests: a page's DOM after load, a screenshot, its network log, and a layout probe.

The probe is a copy of the page without its Content-Security-Policy and with one script that, after load, writes what
the layout engine measured (viewport and page widths, each image's natural and drawn box) into the DOM, where
``--dump-dom`` reads it. The report itself has no script; only this test copy does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it in CI)",
)
TAB_BLUE = np.array([31, 119, 180])
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")

_PROBE = """<script>window.addEventListener('load', () => {
  const box = (e) => { const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
    return {cls: e.className, natural: e.naturalWidth, width: r.width, height: r.height, left: r.left, right: r.right,
            visible: s.visibility !== 'hidden' && s.display !== 'none' && r.width > 0 && r.height > 0}; };
  const out = {viewport: window.innerWidth, page: document.documentElement.scrollWidth,
               images: [...document.images].map(box)};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def open_page(page: Path, work: Path, width: int = 1400, height: int = 5000) -> tuple[str, Path, Path]:
    """Load ``page`` in headless Chromium at ``width`` x ``height``: its DOM after load, a screenshot, the net log."""
    shot, netlog = work / "shot.png", work / "netlog.json"
    command = [
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={work / 'profile'}",
        f"--log-net-log={netlog}",
        f"--screenshot={shot}",
        f"--window-size={width},{height}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)
    return result.stdout, shot, netlog


def layout(page: Path, work: Path, width: int = 1280) -> dict:
    """What Chromium's layout measured on ``page`` at ``width`` px (see the module docstring)."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"<meta http-equiv='Content-Security-Policy'[^>]*>", "", text).replace("</body>", f"{_PROBE}</body>")
    probe = work / "probe.html"
    work.mkdir(parents=True, exist_ok=True)
    probe.write_text(text, encoding="utf-8")
    dom, _, _ = open_page(probe, work, width, 900)
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S)
    assert found, "the layout probe did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def page_requests(netlog: Path) -> set[str]:
    """URLs requested on behalf of a file:// page (events grouped by source; the browser's own are left out)."""
    events = json.loads(netlog.read_text(encoding="utf-8"))["events"]
    by_source: dict[int, list[dict]] = defaultdict(list)
    for event in events:
        by_source[event["source"]["id"]].append(event.get("params", {}))
    requested = set()
    for params in by_source.values():
        texts = [value for p in params for value in p.values() if isinstance(value, str)]
        if any("file://" in text for text in texts):
            requested |= {p["url"] for p in params if isinstance(p.get("url"), str)}
    return requested


def blue_pixels(png: Path) -> int:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - TAB_BLUE) <= 8).all(axis=-1).sum())
