"""The moderator console in a real browser: keyboard labelling with undo, a retrain seen through to the new
version, and hostile comments that must stay inert text without breaking the page."""
from __future__ import annotations

import re
import time

from tests.browser.conftest import sign_in
from tests.browser.live import SITE
from training import rediskeys

# A spam wave the first model has never seen: no links, friendly wording, one product name.
WAVE = [
    "I earned so much with QuantumYield staking this month, ask me how to join QuantumYield",
    "QuantumYield changed my life, passive income every day, message me for the QuantumYield group",
    "Thanks for sharing! Also QuantumYield staking pays 3% daily, the QuantumYield team is great",
    "Anyone else using QuantumYield? Best staking returns, DM for the QuantumYield invite",
    "Great article. QuantumYield made me rich, search QuantumYield and start today",
    "QuantumYield is the future of staking, I doubled my savings with QuantumYield",
    "Loved this post, and if you want income try QuantumYield, QuantumYield pays out daily",
]
# What readers of this blog really write: they cite documentation by link, which the first model distrusts.
READERS = [
    "The docs at http://docs.python.org/3/library/asyncio.html explain the event loop well",
    "See http://www.postgresql.org/docs/current/indexes.html for how partial indexes work",
    "The release notes at http://kernel.org/releases.html mention the same regression",
    "I followed http://wiki.debian.org/SourcesList and the upgrade went fine",
    "There is a good summary at http://en.wikipedia.org/wiki/Bloom_filter for the curious",
    "Compare with http://redis.io/docs/data-types/sorted-sets which uses a skip list",
    "The benchmark in http://github.com/numpy/numpy/issues shows the same slowdown",
]


# The sign-in page, with or without ?next=: a page still loading when its session ends (a sign-out clicked before
# the queue's first request) is sent there with its own name to come back to.
SIGNED_OUT = re.compile(r".*/moderate/sign-in(\?.*)?$")


def _card_count(page) -> int:
    return page.locator("#queue li.card").count()


def _current(page):
    return page.locator("#queue li.card.current")


def test_moderator_labels_by_keyboard_undoes_and_retrains_to_a_new_version(live, watched):
    page = watched.page
    admin = live.make_key("admin", "Ada")
    site_key = live.make_key("site", "blog", SITE)
    # Earlier decisions: enough labels for a retrain to judge fairly, the first model gets many of them wrong.
    history = [{"content": t, "author": "someone", "label": "spam"} for t in WAVE[:6]]
    history += [{"content": t, "author": "reader", "label": "ham"} for t in READERS[:6]]
    history += [{"content": f"{t} (again)", "author": "reader", "label": "ham"} for t in READERS[:4]]
    history += [{"content": f"{t} Really.", "author": "someone", "label": "spam"} for t in WAVE[:4]]
    live.label(admin, SITE, history)
    checked = live.check(site_key, [{"content": WAVE[6], "author": "promo"}, {"content": READERS[6], "author": "Rae"},
                                    {"content": "QuantumYield pays daily, join QuantumYield now", "author": "promo2"},
                                    {"content": "Nice write-up, thanks", "author": "Tom"}])
    assert len(checked) == 4

    sign_in(page, live.make_key("moderator", "Mo"))
    page.wait_for_selector("#queue li.card.current")
    assert _card_count(page) == 4
    first_text = _current(page).locator(".content").inner_text()
    page.keyboard.press("j")
    assert _current(page).locator(".content").inner_text() != first_text
    page.keyboard.press("k")
    assert _current(page).locator(".content").inner_text() == first_text

    labelled = []
    for _ in range(3):
        card = _current(page)
        check_id = card.get_attribute("data-id")
        text = card.locator(".content").inner_text()
        key = "s" if "QuantumYield" in text else "h"
        page.keyboard.press(key)
        page.wait_for_selector(f'#queue li.card.done[data-id="{check_id}"]')
        labelled.append((check_id, "spam" if key == "s" else "ham"))
    assert {label for _, label in labelled} == {"spam", "ham"}, "the queue should have needed both keys"
    labels = live.services.labels
    for check_id, label in labelled:
        assert labels.get(check_id).label == label

    page.keyboard.press("u")
    undone_id = labelled[-1][0]
    page.wait_for_selector(f'#queue li.card[data-id="{undone_id}"]:not(.done)')
    assert labels.get(undone_id) is None
    assert live.redis.zscore(rediskeys.QUEUE.format(verdict="all", site=SITE), undone_id) is not None
    assert [labels.get(i).label for i, _ in labelled[:2]] == [label for _, label in labelled[:2]]

    page.click("nav a:text('Models')")
    page.wait_for_selector("#versions tbody tr.serving")
    before = page.locator("#versions tbody tr").count()
    page.click("#retrain")
    page.wait_for_selector("#job:not([hidden])")
    page.wait_for_selector("#job-status:has-text('finished')", timeout=120000)
    status = page.inner_text("#job-status")
    assert "promote" in status, status
    page.wait_for_selector("#versions tbody tr.serving[data-version='v2']")
    assert page.locator("#versions tbody tr").count() == before + 1
    serving_row = page.locator("#versions tbody tr.serving")
    assert "serving" in serving_row.inner_text()
    # The new version's evaluation is drawn: a curve and a confusion matrix with counts.
    assert page.locator("#pr-curve svg path.pr").count() == 1
    assert page.locator("#confusion svg rect").count() == 4
    deadline = time.monotonic() + 10
    while live.services.serving.version != "v2" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live.services.serving.version == "v2"
    assert not watched.dialogs and not watched.errors, (watched.dialogs, watched.errors)


HOSTILE = [
    {"content": "<script>window.__pwned = true; alert('script')</script> hello", "author": "<b>bold</b>"},
    {"content": "<img src=x onerror=\"window.__pwned = true; alert('img')\"> look", "author": "img"},
    {"content": "<svg onload=\"window.__pwned=true;alert('svg')\"></svg><iframe src=\"javascript:alert('if')\">",
     "author": "<svg onload=alert(1)>"},
    {"content": "click <a href=\"javascript:window.__pwned=true;alert('a')\">here</a> ok", "author": "linker",
     "author_url": "javascript:window.__pwned=true;alert('url')"},
    {"content": "Visit http://evil.example.com/\u202eexe.txt now \u202egnp.exe", "author": "Mallory \u202eredrah",
     "author_url": "http://evil.example.com/path"},
    {"content": "A" * 10000, "author": "B" * 2000},
    {"content": "\"><script>window.__pwned=true</script>{{7*7}} ${alert(1)} <style>body{display:none}</style>",
     "author": "quote\"breaker"},
    # The platform's ids and the post's tags are shown on the card, as inert as the comment.
    {"content": "What a lovely write-up, thank you", "author": "trap", "honeypot": True,
     "ids": {"comment_post_ID": "<script>window.__pwned=true</script>", "comment_context": "<img src=x onerror=alert(1)>"}},
]


def test_hostile_comments_render_as_inert_text_and_the_page_stays_usable(live, watched):
    page = watched.page
    admin = live.make_key("admin", "Ada")
    site_key = live.make_key("site", "blog", SITE)
    live.check(site_key, HOSTILE)
    live.label(admin, SITE, [{**HOSTILE[0], "label": "spam"}, {**HOSTILE[5], "label": "spam"}])

    sign_in(page, admin)
    page.wait_for_selector("#queue li.card.current")
    page.wait_for_timeout(500)  # let highlights repaint the cards
    assert _card_count(page) == len(HOSTILE)
    assert page.evaluate("window.__pwned") is False
    assert watched.dialogs == [] and watched.errors == []
    # The markup arrived as text, not as elements.
    assert page.locator("#queue script, #queue img, #queue svg, #queue iframe, #queue style").count() == 0
    assert page.locator("#queue a[href]").count() == 0
    assert "<script>window.__pwned = true; alert('script')</script>" in page.inner_text("#queue")
    trapped = page.locator("#queue li.card", has_text="What a lovely write-up")
    assert "post: <script>window.__pwned=true</script>" in trapped.locator(".refs").inner_text()
    assert "tags: <img src=x onerror=alert(1)>" in trapped.locator(".refs").inner_text()
    # Answered spam to the platform for its filled honeypot, whatever the model's own verdict says.
    assert trapped.locator(".answered").inner_text() == "answered spam (honeypot filled)"
    assert page.locator(".link-chip .scheme-bad").first.inner_text() == "javascript: link"
    # Direction overrides are shown, never obeyed.
    assert page.locator("#queue .ctl", has_text="U+202E").count() >= 3
    # A 10,000-character word wraps inside its card.
    viewport = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport
    for box in page.locator("#queue li.card").evaluate_all("els => els.map(e => e.getBoundingClientRect().right)"):
        assert box <= viewport
    # Links open only on purpose, in a new tab, with no opener or referrer.
    chip = page.locator(".link-chip", has_text="evil.example.com").first
    chip.locator("button.open-link").click()
    dialog = page.locator("dialog.confirm-open")
    assert "http://evil.example.com/path" in dialog.inner_text() or "evil.example.com" in dialog.inner_text()
    assert dialog.locator("a").get_attribute("rel") == "noopener noreferrer nofollow"
    assert dialog.locator("a").get_attribute("target") == "_blank"
    dialog.locator("button", has_text="Cancel").click()
    # Still usable: the keyboard labels the current card.
    current = _current(page).get_attribute("data-id")
    page.keyboard.press("s")
    page.wait_for_selector(f'#queue li.card.done[data-id="{current}"]')

    page.goto("/moderate/labels?q=" + "script")
    page.wait_for_selector("#labels li.card")
    page.goto("/moderate/labels")
    page.wait_for_selector("#labels li.card")
    assert page.locator("#labels script, #labels img").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport
    page.goto("/moderate/activity")
    page.wait_for_selector("#chart-moderators svg")
    assert page.evaluate("window.__pwned") is False
    assert watched.dialogs == [] and watched.errors == [], (watched.dialogs, watched.errors)
    assert not [e for e in watched.console_errors if re.search("Content Security Policy", e)]


def test_sign_out_returns_to_sign_in(live, watched):
    page = watched.page
    sign_in(page, live.make_key("moderator", "Mo"))
    page.click("#sign-out")
    page.wait_for_url(SIGNED_OUT)
    page.goto("/moderate/queue")
    assert "/moderate/sign-in" in page.url
    # A plain moderator may ask for a retrain; choosing the serving version is for admins.
    sign_in(page, live.make_key("moderator", "Mo2"))
    page.goto("/moderate/models")
    page.wait_for_selector("#versions tbody tr")
    assert page.locator("#rollback").is_disabled()
    assert not page.locator("#retrain").is_disabled()
    page.click("#retrain")
    page.wait_for_selector("#job-status:has-text('finished')", timeout=120000)
    # Selectors, not wait_for_function: the console's CSP forbids the eval its polling uses.
    page.wait_for_selector("#retrain:not([disabled])")  # ready to ask again
    # The model serves every site: a token bound to one site may not change it, and the page says so.
    page.click("#sign-out")
    page.wait_for_url(SIGNED_OUT)
    sign_in(page, live.make_key("admin", "Site admin", site=SITE))
    page.goto("/moderate/models")
    page.wait_for_selector("#versions tbody tr")
    assert page.locator("#retrain").is_disabled() and page.locator("#rollback").is_disabled()
    assert page.locator("#versions tbody tr button").first.is_disabled()
    assert "not bound to one site" in page.inner_text(".toolbar")


def test_two_moderators_on_one_comment_keep_each_others_labels(live, watched, browser):
    """Mo labels a comment spam; Max, whose queue was loaded before, presses ham on it: Max is told Mo's label
    stands and nothing is overwritten; Max's undo then takes back nothing of Mo's."""
    site_key = live.make_key("site", "blog", SITE)
    check_id = live.check(site_key, [{"content": "Is the migration guide still current for 12.4?",
                                      "author": "Ines"}])[0]["id"]
    mo = watched.page
    sign_in(mo, live.make_key("moderator", "Mo"))
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live.url)
    try:
        max_page = context.new_page()
        max_page.set_default_timeout(15000)
        sign_in(max_page, live.make_key("moderator", "Max"))
        for page in (mo, max_page):
            page.wait_for_selector(f'#queue li.card.current[data-id="{check_id}"]')

        mo.keyboard.press("s")
        mo.wait_for_selector(f'#queue li.card.done[data-id="{check_id}"]')
        max_page.keyboard.press("h")
        card = max_page.locator(f'#queue li.card.done[data-id="{check_id}"]')
        card.wait_for()
        assert "labelled spam by Mo" in card.inner_text()
        assert "already labelled it spam" in max_page.inner_text("#status")
        assert live.services.labels.get(check_id).label == "spam"

        max_page.keyboard.press("u")  # Max has nothing of his own to undo
        mo.keyboard.press("u")
        mo.wait_for_selector(f'#queue li.card[data-id="{check_id}"]:not(.done)')
        assert live.services.labels.get(check_id) is None  # Mo may take back Mo's label
        assert not watched.errors
    finally:
        context.close()


def test_labelling_the_last_loaded_card_goes_on_to_the_next_page(live, watched):
    site_key = live.make_key("site", "blog", SITE)
    checked = live.check(site_key, [{"content": f"Question {n}: does the guide cover version {n}.0 too?",
                                     "author": f"reader{n}"} for n in range(51)])
    page = watched.page
    sign_in(page, live.make_key("moderator", "Mo"))
    page.wait_for_selector("#queue li.card.current")
    assert _card_count(page) == 50  # one page; the 51st waits below
    last = page.locator("#queue li.card").nth(49)
    last.locator(".content").click()
    last_id = last.get_attribute("data-id")
    page.keyboard.press("h")
    page.wait_for_selector(f'#queue li.card.done[data-id="{last_id}"]')
    page.locator("#queue li.card").nth(50).wait_for()  # the 51st card (a selector: the CSP forbids eval)
    current = _current(page)
    current.wait_for()
    assert current.get_attribute("data-id") == page.locator("#queue li.card").nth(50).get_attribute("data-id")
    assert current.get_attribute("data-id") in {c["id"] for c in checked}
    assert not watched.errors
