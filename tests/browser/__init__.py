"""Browser tests of the moderator console (Playwright driving Debian's chromium) and the screenshot script."""
