"""A headless Chromium driven by Selenium, to test the viewer page and screenshot it.

Optional: needs ``pip install selenium`` and a Chromium with its matching driver (Debian/Ubuntu:
``apt-get install -y chromium chromium-driver``). Nothing is downloaded: the binaries are found on
``PATH`` or named by the ``CHROMIUM_BIN`` / ``CHROMEDRIVER`` environment variables.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BROWSER_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_NAMES: tuple[str, ...] = ("chromedriver", "chromium-driver")


def find_chromium() -> tuple[str, str] | None:
    """``(browser, driver)`` executables, from ``$CHROMIUM_BIN``/``$CHROMEDRIVER`` or ``PATH``; None if either is missing."""
    browser = os.environ.get("CHROMIUM_BIN") or next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    driver = os.environ.get("CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVER_NAMES)), None)
    if browser and driver and Path(browser).exists() and Path(driver).exists():
        return browser, driver
    return None


def headless_chromium(*, width_px: int = 1400, height_px: int = 900):
    """A ``selenium.webdriver.Chrome`` running headless Chromium, console logs collected (``get_log("browser")``).

    Audio may start without a user gesture (a scripted click counts as none). The caller quits it.

    Raises:
        ImportError: selenium is not installed.
        FileNotFoundError: no Chromium or no chromedriver found.
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        raise ImportError("the viewer's browser tools need selenium: pip install selenium") from error
    found = find_chromium()
    if found is None:
        raise FileNotFoundError(
            "no Chromium/chromedriver found on PATH (apt-get install -y chromium chromium-driver), "
            "or set CHROMIUM_BIN and CHROMEDRIVER"
        )
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width_px},{height_px}", "--autoplay-policy=no-user-gesture-required",
                 "--mute-audio"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
