"""Headless Chromium for the report tests: find it (skip without it) and measure a page.

``measured_dom`` renders a copy of a report with a measuring ``<script>`` appended (the
copy drops the page's no-script policy so the script runs) and returns the DOM after load
and Chromium's stderr; the script leaves its figures in ``data-*`` attributes of ``body``.

Example::

    dom, _ = measured_dom(chromium(), html, tmp_path, "<script>...dataset.m=...</script>")
    figures = data_attribute(dom, "m")
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1300,2000"]


def chromium() -> str:
    """The Chromium executable, or skip the test (Debian: ``apt-get install -y chromium``)."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    pytest.skip("headless Chromium not installed: `apt-get install -y chromium` (Debian)")


def measured_dom(
    browser: str, page: str, folder: Path, script: str, timeout: int = 90, console: bool = False
) -> tuple[str, str]:
    """(DOM after load, stderr) of ``page`` with ``script`` before ``</body>``, rendered in
    ``folder``; ``console``: Chromium's console messages go to stderr."""
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "measure.html"
    copy.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    logging = ["--enable-logging=stderr", "--v=0"] if console else []
    run = subprocess.run(
        [browser, *FLAGS, "--virtual-time-budget=3000", *logging]
        + [f"--user-data-dir={folder / 'p'}", "--dump-dom", copy.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return run.stdout, run.stderr


def data_attribute(dom: str, name: str) -> Any:
    """The JSON a measuring script left in ``body``'s ``data-<name>`` attribute."""
    found = re.search(rf'data-{name}="([^"]*)"', dom)
    assert found, dom[-500:]
    return json.loads(html_lib.unescape(found.group(1)))
