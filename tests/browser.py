"""Headless Chromium for the tests that open the app's pages (OHIF, the team dashboard) as a user's
browser does. Screenshots are kept in ``$UNIVERSAL_TEST_ARTEFACTS`` (default: ``test-artefacts/`` in the
repository, which git ignores)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Flags for a headless Chromium on a machine without a network: no GPU, no background connections
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def require_chromium() -> None:
    """Skip (fail in CI) when Chromium, its driver or selenium is missing."""
    from conftest import missing_in_ci

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        missing_in_ci("Chromium and its driver (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing_in_ci("selenium (scripts/install.sh installs requirements.txt)")


@contextlib.contextmanager
def headless_chromium(profile: Path, size: str = "1400,900") -> Iterator:
    """A selenium driver of a fresh Chromium whose profile lives in ``profile``; its performance log
    holds every request the pages make (:func:`requested_urls`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--window-size={size}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver, document: str) -> list[str]:
    """The URLs of the requests that pages under ``document`` (a URL prefix) sent since the last call
    (DevTools' Network.requestWillBeSent events, which chromedriver keeps in the ``performance`` log;
    ``documentURL`` names the page that sent each)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent" and message["params"]["documentURL"].startswith(document):
            urls.append(message["params"]["request"]["url"])
    return urls


def artefacts() -> Path:
    """The folder that keeps the tests' screenshots."""
    folder = Path(os.environ.get("UNIVERSAL_TEST_ARTEFACTS") or Path(__file__).resolve().parents[1] / "test-artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
