"""The browser tests' fixtures (tests/browser/browsing.py): one headless Chromium for the
session, its cookies cleared for each test."""

from tests.browser.browsing import browser, driver

__all__ = ["browser", "driver"]
