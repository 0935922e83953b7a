"""Headless Chromium through Selenium, with Debian's chromium and chromedriver (nothing is downloaded)."""

from __future__ import annotations

import os
import shutil

from tests.system_packages import missing

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium_driver(width: int = 1100, height: int = 900):
    """A headless Chromium WebDriver. Without the Debian packages: skipped locally, a failure under CI (.ci/run
    installs them through .ci/system-packages)."""
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        missing("Debian's chromium / chromium-driver missing", "chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
