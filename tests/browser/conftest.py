"""One live Winnow and one headless chromium for the whole browser session; a fresh browser context per test."""
from __future__ import annotations

import pytest

from tests.browser.live import LiveWinnow, launch_browser
from tests.conftest import require_program


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    require_program("chromium")
    winnow = LiveWinnow(tmp_path_factory.mktemp("live-winnow")).start()
    yield winnow
    winnow.stop()


@pytest.fixture(scope="package")
def browser(live):
    # Package scope: Playwright's sync API keeps an event loop running in this thread while it is open, which
    # would break asyncio.run() in tests collected after the browser package.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        yield chromium
        chromium.close()


class PageWatch:
    """A page plus everything that would prove a script ran or broke: dialogs, page errors, console errors."""

    def __init__(self, page):
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.console_errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture()
def watched(browser, live):
    live.reset()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live.url)
    # Any script an attacker's comment managed to run would flip this flag (or open a dialog).
    context.add_init_script("window.__pwned = false;")
    page = context.new_page()
    page.set_default_timeout(15000)
    yield PageWatch(page)
    context.close()


def sign_in(page, token: str) -> None:
    page.goto("/moderate/queue")
    assert "/moderate/sign-in" in page.url
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/moderate/queue")
