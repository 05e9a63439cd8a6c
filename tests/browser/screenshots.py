"""`make screenshots`: a PNG of each console page (sign-in, queue, labels, models, activity) in docs/screenshots/.

It starts a private live Winnow, fills it with a small believable day of moderation (checks, labels by two
moderators, a retrain), and photographs each page in headless chromium at 1280x860.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.browser.live import OTHER_SITE, SITE, LiveWinnow, launch_browser
from training.settings import ROOT

OUT = ROOT / "docs" / "screenshots"

QUEUE = [
    {"content": "Great write-up! I made $4,000 last week with QuantumYield staking, ask me how: "
                "https://quantumyield.example.biz/join", "author": "Crypto Carla", "author_url": "https://qy.example.biz"},
    {"content": "The docs at https://docs.python.org/3/library/asyncio.html explain the event loop better than "
                "I could.", "author": "Rae"},
    {"content": "Nice post. Check my profile for FREE followers!!! visit www.followers-now.example.com",
     "author": "Followers Bot"},
    {"content": "I disagree with the second point: caching is not always faster when the working set is small.",
     "author": "Tom"},
    {"content": "<a href=\"javascript:alert(1)\">cheap watches</a> \u202egnp.exe", "author": "Mallory \u202eredrah",
     "author_url": "javascript:alert(1)"},
    {"content": "Could you write a follow-up about backups and restore drills?", "author": "Jun"},
]
LABELS = [
    ("spam", "Buy cheap pills now http://pills.example.com best price", "pharma"),
    ("spam", "Earn $5000 a week from home, click http://money.example.biz", "money"),
    ("ham", "Thanks for the clear explanation of the migration steps.", "Ana"),
    ("ham", "I tried this on Debian and it worked after installing the headers.", "Luis"),
    ("spam", "QuantumYield pays 3% daily, join the QuantumYield group", "promo"),
    ("ham", "The release notes at http://kernel.org/releases.html mention the same regression", "Kim"),
    ("spam", "FREE gift card!!! visit http://gift.example.info now", "gifts"),
    ("ham", "Great post, the part about indexes helped me a lot.", "Ola"),
    ("spam", "QuantumYield changed my life, message me for the QuantumYield invite", "promo2"),
    ("ham", "See http://www.postgresql.org/docs/current/indexes.html for partial indexes", "Pat"),
    ("spam", "Anyone else using QuantumYield? Best staking returns, DM me", "promo3"),
    ("ham", "Lovely photos of the mountains, where was the last one taken?", "Eve"),
]


def populate(live: LiveWinnow) -> str:
    admin = live.make_key("admin", "Ada Admin")
    mod = live.make_key("moderator", "Mo Moderator")
    blog = live.make_key("site", "blog", SITE)
    forum = live.make_key("site", "forum", OTHER_SITE)
    live.check(forum, [{"content": f"Forum reply {i}: thanks, that fixed it", "site": OTHER_SITE} for i in range(5)])
    for n in range(3):
        live.label(mod if n % 2 else admin, SITE, [
            {"content": f"{text} #{n}", "author": author, "label": label} for label, text, author in LABELS])
    live.check(blog, QUEUE)
    return admin


def wait_for_retrain(page) -> None:
    page.click("#retrain")
    page.wait_for_selector("#job-status:has-text('finished'), #job-status:has-text('failed')", timeout=180000)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, LiveWinnow(Path(tmp)) as live, sync_playwright() as pw:
        admin = populate(live)
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, base_url=live.url)
        page.set_default_timeout(20000)

        page.goto("/moderate/sign-in")
        page.screenshot(path=str(OUT / "sign-in.png"))
        page.fill("#token", admin)
        page.click("button[type=submit]")
        page.wait_for_url("**/moderate/queue")

        page.goto("/moderate/models")
        page.wait_for_selector("#versions tbody tr.serving")
        wait_for_retrain(page)
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "models.png"), full_page=True)

        page.goto("/moderate/queue")
        page.wait_for_selector("#queue li.card.current")
        page.wait_for_timeout(800)  # highlights arrive after the cards
        page.keyboard.press("j")
        page.keyboard.press("x")
        page.keyboard.press("k")
        page.screenshot(path=str(OUT / "queue.png"))

        page.goto("/moderate/labels?q=quantumyield")
        page.wait_for_selector("#labels li.card")
        page.wait_for_timeout(500)
        page.locator("#labels li.card button", has_text="History").first.click()
        page.wait_for_timeout(300)
        page.screenshot(path=str(OUT / "labels.png"))

        page.goto("/moderate/activity")
        page.wait_for_selector("#chart-moderators svg")
        page.wait_for_timeout(300)
        page.screenshot(path=str(OUT / "activity.png"), full_page=True)
        browser.close()
    for name in ("sign-in", "queue", "labels", "models", "activity"):
        print(OUT / f"{name}.png")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"screenshots written in {time.monotonic() - started:.1f} s", file=sys.stderr)
    sys.exit(code)
