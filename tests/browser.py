"""Open a page in a real headless browser: Debian's chromium (scripts/install.sh installs it),
driven by Playwright, which never downloads a browser of its own here.

Without chromium or Playwright the test is skipped, and so fails under CI (tests/conftest.py).
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run")


@contextmanager
def open_page(html_file: str | Path) -> Iterator[tuple[Any, list[str]]]:
    """``(page, errors)``: the file loaded in headless chromium (a fresh profile in a temporary
    folder), and the console errors and uncaught page errors seen so far."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} missing: scripts/install.sh installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -r requirements.txt")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                            args=list(CHROMIUM_ARGS))
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(Path(html_file).resolve().as_uri(), wait_until="load")
            yield page, errors
        finally:
            context.close()


def computed(page: Any, selector: str, prop: str) -> list[str]:
    """The computed CSS ``prop`` of every element matching ``selector``, in document order."""
    return page.eval_on_selector_all(selector, f"els => els.map(e => getComputedStyle(e).{prop})")
