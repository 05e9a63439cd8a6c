"""The console's server side through Flask's test client: sign-in and session cookie, CSRF, security headers,
and the console's own JSON (sites, highlights, undo, relabel, search, activity). The browser tests drive the pages."""
from __future__ import annotations

import functools
import re

import pytest
import redis

from service.app import create_app
from service.console.data import segments
from tests.browser.live import OTHER_SITE, SITE, first_model
from training import rediskeys
from training.registry import ServingModel
from training.settings import Settings

CONSOLE_DB = 9


@functools.lru_cache(maxsize=1)
def _model():
    return first_model()


@pytest.fixture()
def client_redis(redis_url):
    url = re.sub(r"/\d+$", f"/{CONSOLE_DB}", redis_url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _app(client_redis, tmp_path, **overrides):
    settings = Settings(redis_url="redis://unused", secret_key="console-test", data_dir=tmp_path,
                        models_dir=tmp_path, **overrides)
    app = create_app(settings, redis_client=client_redis, serving=ServingModel.fixed(_model(), "v1"))
    app.config["TESTING"] = True
    return app


@pytest.fixture()
def app(client_redis, tmp_path):
    app = _app(client_redis, tmp_path)
    yield app
    app.extensions["winnow"].writer.stop(timeout=1)


@pytest.fixture()
def keys(app):
    store = app.extensions["winnow"].keys
    return {
        "admin": store.create(role="admin", name="Ada")[0],
        "moderator": store.create(role="moderator", name="Mo")[0],
        "scoped": store.create(role="moderator", name="Sam", site=OTHER_SITE)[0],
        "site": store.create(site=SITE, role="site", name="blog")[0],
        "other": store.create(site=OTHER_SITE, role="site", name="forum")[0],
    }


def _csrf_from(html: str) -> str:
    m = re.search(r'name="csrf(?:-token)?" (?:value|content)="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def sign_in(client, token: str, next_page: str = "") -> str:
    """Sign in through the form; returns the CSRF token of the session (from the page's meta tag)."""
    form = client.get("/moderate/sign-in").get_data(as_text=True)
    r = client.post("/moderate/sign-in", data={"token": token, "csrf": _csrf_from(form), "next": next_page})
    assert r.status_code == 303, r.get_data(as_text=True)
    page = client.get(r.headers["Location"])
    assert page.status_code == 200
    return _csrf_from(page.get_data(as_text=True))


def check(app, key: str, comments: list[dict]) -> list[str]:
    client = app.test_client()
    r = client.post("/api/v1/check/batch", json={"comments": comments}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.get_json()
    app.extensions["winnow"].writer.flush(timeout=5)
    return [x["id"] for x in r.get_json()["results"]]


# ---- sign-in, session, CSRF, headers ------------------------------------------------------------------------------
def test_pages_need_a_session_and_sign_in_leads_back(app, keys):
    client = app.test_client()
    r = client.get("/moderate/models")
    assert r.status_code == 302 and r.headers["Location"].endswith("/moderate/sign-in?next=models")
    csrf = sign_in(client, keys["moderator"], next_page="models")
    assert csrf
    for name in ("queue", "labels", "models", "activity"):
        page = client.get(f"/moderate/{name}")
        assert page.status_code == 200
        assert f'data-page="{name}"' in page.get_data(as_text=True)


def test_a_session_from_a_node_with_another_secret_is_logged_not_silently_looped(app, keys, client_redis, tmp_path,
                                                                                caplog):
    """Behind a load balancer, a node whose WINNOW_SECRET_KEY differs sends moderators back to sign-in: its log says
    why, once a minute at most, where it said nothing."""
    from service.console import session as console_session

    client = app.test_client()
    sign_in(client, keys["moderator"])
    cookie = client.get_cookie("winnow_console").value
    settings = Settings(redis_url="redis://unused", secret_key="another-secret", data_dir=tmp_path / "b",
                        models_dir=tmp_path / "b")
    other = create_app(settings, redis_client=client_redis, serving=ServingModel.fixed(_model(), "v1"))
    twin = _app(client_redis, tmp_path / "c")
    try:
        same = twin.test_client()
        same.set_cookie("winnow_console", cookie)
        assert same.get("/moderate/queue").status_code == 200  # the same secret: the session holds on any node
        console_session._warned_at = -console_session._WARN_EVERY
        caplog.set_level("WARNING", logger="winnow.console")
        stranger = other.test_client()
        stranger.set_cookie("winnow_console", cookie)
        for _ in range(3):
            assert stranger.get("/moderate/queue").headers["Location"].endswith("/moderate/sign-in?next=queue")
        warnings = [r.getMessage() for r in caplog.records if r.name == "winnow.console"]
        assert len(warnings) == 1 and "WINNOW_SECRET_KEY" in warnings[0]
    finally:
        for node in (other, twin):
            node.extensions["winnow"].writer.stop(timeout=1)


def test_the_top_bar_shows_a_key_names_control_characters_as_markers(app):
    token, _ = app.extensions["winnow"].keys.create(role="moderator", name="<b>evil\u202e</b>")
    client = app.test_client()
    sign_in(client, token)
    html = client.get("/moderate/queue").get_data(as_text=True)
    assert "&lt;b&gt;evil[U+202E]&lt;/b&gt;" in html and "\u202e" not in html


def test_with_redis_away_pages_say_so_and_reads_do_not_speak_of_storing(app, keys, monkeypatch):
    import redis as redis_lib

    client = app.test_client()
    sign_in(client, keys["moderator"])
    store = app.extensions["winnow"]

    def down(*args, **kwargs):
        raise redis_lib.ConnectionError("Redis is away")

    monkeypatch.setattr(store.redis, "get", down)  # console sessions live in Redis
    page = client.get("/moderate/queue")
    assert page.status_code == 503 and page.mimetype == "text/html" and page.headers["Retry-After"] == "5"
    assert "The console is unavailable" in page.get_data(as_text=True)
    monkeypatch.setattr(store.checks, "queue", down)
    listed = client.get("/api/v1/queue", headers={"Authorization": f"Bearer {keys['moderator']}"})
    assert listed.status_code == 503
    assert listed.get_json()["error"]["message"] == "the data store is unavailable; retry later"


def test_session_cookie_is_httponly_strict_and_secure_on_https(app, keys):
    client = app.test_client()
    form = client.get("/moderate/sign-in").get_data(as_text=True)
    r = client.post("/moderate/sign-in", data={"token": keys["moderator"], "csrf": _csrf_from(form)})
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    secure = app.test_client()
    form = secure.get("/moderate/sign-in", base_url="https://localhost").get_data(as_text=True)
    r = secure.post("/moderate/sign-in", data={"token": keys["moderator"], "csrf": _csrf_from(form)},
                    base_url="https://localhost")
    assert "Secure" in r.headers["Set-Cookie"]


def test_secure_cookies_setting_forces_secure(client_redis, tmp_path, keys):
    app = _app(client_redis, tmp_path, secure_cookies=True)
    client = app.test_client()
    form = client.get("/moderate/sign-in").get_data(as_text=True)
    r = client.post("/moderate/sign-in", data={"token": keys["moderator"], "csrf": _csrf_from(form)})
    assert "Secure" in r.headers["Set-Cookie"]


@pytest.mark.parametrize("which, status, message", [
    ("bad", 401, "not valid"), ("site", 403, "site key"), ("empty", 400, "Enter your"), ("nocsrf", 400, "expired"),
])
def test_sign_in_refusals(app, keys, which, status, message):
    client = app.test_client()
    csrf = _csrf_from(client.get("/moderate/sign-in").get_data(as_text=True))
    token = {"bad": "wm_" + "x" * 32, "site": keys["site"], "empty": "", "nocsrf": keys["moderator"]}[which]
    r = client.post("/moderate/sign-in", data={"token": token, "csrf": "" if which == "nocsrf" else csrf})
    assert r.status_code == status
    assert message in r.get_data(as_text=True)
    assert client.get("/moderate/queue").status_code == 302


def test_next_is_never_an_open_redirect(app, keys):
    client = app.test_client()
    form = client.get("/moderate/sign-in").get_data(as_text=True)
    r = client.post("/moderate/sign-in", data={"token": keys["moderator"], "csrf": _csrf_from(form),
                                               "next": "https://evil.example/"})
    assert r.headers["Location"] == "/moderate/queue"


def test_state_changes_need_the_csrf_header_and_sign_out_ends_the_session(app, keys):
    ids = check(app, keys["site"], [{"content": "hello there"}])
    client = app.test_client()
    csrf = sign_in(client, keys["moderator"])
    r = client.post(f"/api/v1/comments/{ids[0]}/label", json={"label": "ham"})
    assert r.status_code == 403 and r.get_json()["error"]["field"] == "X-CSRF-Token"
    r = client.post(f"/api/v1/comments/{ids[0]}/label", json={"label": "ham"}, headers={"X-CSRF-Token": "nope"})
    assert r.status_code == 403
    r = client.post(f"/api/v1/comments/{ids[0]}/label", json={"label": "ham"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    expired = client.post("/moderate/sign-out", data={})
    assert expired.status_code == 400  # sign-out itself needs the token
    assert expired.mimetype == "text/html" and b"This form has expired" in expired.data  # a page, for a person
    for path in ("/moderate/nope", "/moderate/queue/", "/moderate/a/b"):  # routing errors too
        lost = client.get(path)
        assert lost.status_code == 404 and lost.mimetype == "text/html" and b"No such page" in lost.data, path
    wrong = client.put("/moderate/sign-in")
    assert wrong.status_code == 405 and wrong.mimetype == "text/html" and "GET" in wrong.headers["Allow"]
    assert client.get("/moderate/static/nope.js").status_code == 404
    assert client.get("/moderate/api/nope").mimetype == "application/json"  # the console's API stays JSON
    r = client.post("/moderate/sign-out", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["Location"].endswith("/moderate/sign-in")
    assert client.get("/moderate/queue").status_code == 302
    assert client.get("/api/v1/queue").status_code == 401


def test_sign_out_ends_the_session_even_for_a_copied_cookie(app, keys):
    client = app.test_client()
    csrf = sign_in(client, keys["moderator"])
    cookie = client.get_cookie("winnow_console")
    thief = app.test_client()
    thief.set_cookie(cookie.key, cookie.value)
    assert thief.get("/api/v1/queue").status_code == 200
    assert client.post("/moderate/sign-out", data={"csrf": csrf}).status_code == 303
    r = thief.get("/api/v1/queue")
    assert r.status_code == 401 and "sign in again" in r.get_json()["error"]["message"]
    assert thief.get("/moderate/queue").status_code == 302


def test_revoked_token_ends_its_sessions(app, keys):
    client = app.test_client()
    sign_in(client, keys["moderator"])
    store = app.extensions["winnow"].keys
    record = store.authenticate(keys["moderator"])
    store.revoke(record.id)
    store._cache.clear()  # revocation applies within the cache's few seconds; the test does not wait them out
    assert client.get("/moderate/queue").status_code == 302


def test_console_responses_carry_strict_security_headers(app, keys):
    client = app.test_client()
    for path in ("/moderate/sign-in", "/moderate/static/js/main.js", "/moderate/static/console.css"):
        r = client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["Content-Security-Policy"]
        for directive in ("script-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"):
            assert directive in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        r.close()  # static files are streamed from disk
    r = client.get("/moderate/static/js/main.js")
    assert "javascript" in r.headers["Content-Type"]
    r.close()


def test_templates_have_no_inline_script_or_handlers(app, keys):
    client = app.test_client()
    sign_in(client, keys["admin"])
    for name in ("sign-in", "queue", "labels", "models", "activity"):
        html = client.get(f"/moderate/{name}").get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), name
        assert not re.search(r"\son[a-z]+\s*=", html), name
        assert "style=" not in html, name


# ---- console JSON ---------------------------------------------------------------------------------------------------
def test_segments_cover_the_content_in_order():
    content = "Buy cheap pills now"
    highlights = [{"start": 4, "end": 9, "weight": 0.8}, {"start": 0, "end": 3, "weight": 0.2},
                  {"start": 6, "end": 12, "weight": 1.0}, {"start": 15, "end": 99, "weight": -0.1}]
    out = segments(content, highlights)
    assert "".join(text for text, _ in out) == content
    # An overlapping span keeps only its uncoloured part; a span past the end is cut at it.
    assert out == [["Buy", 0.2], [" ", None], ["cheap", 0.8], [" pi", 1.0], ["lls", None], [" now", -0.1]]
    assert segments("", []) == []


def test_explain_gives_word_weights_for_checks_in_scope(app, keys):
    spam, other = check(app, keys["site"], [{"content": "Buy cheap pills http://pills.example.com now"}])[0], \
        check(app, keys["other"], [{"content": "forum post", "site": OTHER_SITE}])[0]
    client = app.test_client()
    sign_in(client, keys["scoped"])
    r = client.get(f"/moderate/api/explain?ids={spam},{other},nonexistent")
    body = r.get_json()
    assert list(body["explanations"]) == [other]  # another site's check is not even acknowledged
    client = app.test_client()
    sign_in(client, keys["moderator"])
    explained = client.get(f"/moderate/api/explain?ids={spam}").get_json()["explanations"][spam]
    segs = explained["segments"]
    assert "".join(t for t, _ in segs) == "Buy cheap pills http://pills.example.com now"
    weights = {t.lower(): w for t, w in segs if w is not None}
    assert weights and max(weights.values()) > 0
    assert client.get("/moderate/api/explain?ids=" + ",".join(["a"] * 51)).status_code == 400


def test_sites_lists_sites_and_a_scoped_moderator_sees_only_its_own(app, keys):
    client = app.test_client()
    sign_in(client, keys["moderator"])
    assert client.get("/moderate/api/sites").get_json() == {"sites": sorted([SITE, OTHER_SITE]), "scoped": False}
    # A site with no key of its own: an unscoped token checked for it, or an admin gave it settings.
    auth = {"Authorization": f"Bearer {keys['admin']}"}
    odd, configured = "https://odd.example.net", "https://configured.example.net"
    assert client.post("/api/v1/check", json={"content": "hello there", "site": odd}, headers=auth).status_code == 200
    app.extensions["winnow"].writer.flush()
    assert client.put("/api/v1/sites/configured.example.net/settings", json={"shadow": True},
                      headers=auth).status_code == 200
    assert client.get("/moderate/api/sites").get_json() == {
        "sites": sorted([SITE, OTHER_SITE, odd, configured]), "scoped": False}
    client = app.test_client()
    sign_in(client, keys["scoped"])
    assert client.get("/moderate/api/sites").get_json() == {"sites": [OTHER_SITE], "scoped": True}


def test_undo_takes_the_label_back_and_requeues_the_check(app, keys, client_redis):
    ids = check(app, keys["site"], [{"content": "Great post"}, {"content": "buy pills http://x.example.com"}])
    client = app.test_client()
    csrf = sign_in(client, keys["moderator"])
    h = {"X-CSRF-Token": csrf}
    assert client.post(f"/api/v1/comments/{ids[0]}/label", json={"label": "spam"}, headers=h).status_code == 200
    queued = [i["id"] for i in client.get("/api/v1/queue").get_json()["items"]]
    assert ids[0] not in queued
    assert client.post(f"/moderate/api/labels/{ids[0]}/undo").status_code == 403  # no CSRF header
    r = client.post(f"/moderate/api/labels/{ids[0]}/undo", headers=h)
    assert r.status_code == 200 and r.get_json()["removed"] == "spam"
    assert client.get(f"/api/v1/labels/{ids[0]}").get_json()["label"] is None  # taken back; its trail stays
    assert ids[0] in [i["id"] for i in client.get("/api/v1/queue").get_json()["items"]]
    assert client_redis.zscore(rediskeys.QUEUE_BY_TIME, ids[0]) is not None
    audit = [__import__("json").loads(x) for x in client_redis.lrange(rediskeys.LABEL_AUDIT.format(id=ids[0]), 0, -1)]
    assert [(a["from"], a["to"]) for a in audit] == [(None, "spam"), ("spam", None)]
    assert client.post(f"/moderate/api/labels/{ids[0]}/undo", headers=h).status_code == 404

    # A trusted author's check never waited in the queue, and undoing its label does not put it there.
    staff = check(app, keys["site"], [{"content": "Moderator note: thread locked", "user_role": "administrator"}])[0]
    assert client.post(f"/api/v1/comments/{staff}/label", json={"label": "ham"}, headers=h).status_code == 200
    assert client.post(f"/moderate/api/labels/{staff}/undo", headers=h).status_code == 200
    assert staff not in [i["id"] for i in client.get("/api/v1/queue").get_json()["items"]]
    assert client_redis.zscore(rediskeys.QUEUE_BY_TIME, staff) is None


def test_relabel_works_after_the_check_expired_and_is_audited(app, keys, client_redis):
    ids = check(app, keys["site"], [{"content": "Thanks, this helped"}])
    client = app.test_client()
    csrf = sign_in(client, keys["moderator"])
    h = {"X-CSRF-Token": csrf}
    client.post(f"/api/v1/comments/{ids[0]}/label", json={"label": "spam"}, headers=h)
    client_redis.delete(rediskeys.CHECK.format(id=ids[0]))  # retention passed
    r = client.post(f"/moderate/api/labels/{ids[0]}", json={"label": "ham"}, headers=h)
    assert r.status_code == 200 and r.get_json()["label"] == "ham" and r.get_json()["previous"] == "spam"
    assert client.post(f"/moderate/api/labels/{ids[0]}", json={"label": "eggs"}, headers=h).get_json()[
        "error"]["field"] == "label"
    assert client.post(f"/moderate/api/labels/{ids[0]}", json={"label": "ham", "x": 1},
                       headers=h).get_json()["error"]["field"] == "x"
    audit = client.get(f"/api/v1/labels/{ids[0]}").get_json()["audit"]
    assert [(a["from"], a["to"]) for a in audit] == [(None, "spam"), ("spam", "ham")]
    client = app.test_client()
    csrf = sign_in(client, keys["scoped"])
    r = client.post(f"/moderate/api/labels/{ids[0]}", json={"label": "spam"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 404


def test_search_finds_labelled_comments_by_text_author_and_link(app, keys):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    items = [{"content": f"ordinary comment number {i}", "author": "Reader", "label": "ham"} for i in range(60)]
    items += [{"content": "Visit my Casino page", "author": "Lucky", "author_url": "http://casino.example.com",
               "label": "spam"},
              {"content": "casino nights at the club were fun", "author": "Bea", "label": "ham"}]
    assert client.post("/api/v1/labels", json={"site": SITE, "items": items}, headers=headers).status_code == 201

    def search(**params):
        r = client.get("/moderate/api/labels/search", query_string=params, headers=headers)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    assert {i["comment"]["author"] for i in search(q="CASINO")["items"]} == {"Lucky", "Bea"}
    assert [i["comment"]["author"] for i in search(q="casino", label="spam")["items"]] == ["Lucky"]
    assert [i["comment"]["author"] for i in search(q="lucky")["items"]] == ["Lucky"]
    assert search(q="casino.example.com")["items"][0]["comment"]["author"] == "Lucky"
    first = search(q="ordinary")
    assert len(first["items"]) == 50 and first["next_cursor"]
    rest = search(q="ordinary", cursor=first["next_cursor"])
    assert len(rest["items"]) == 10 and rest["next_cursor"] is None
    seen = {i["id"] for i in first["items"]} | {i["id"] for i in rest["items"]}
    assert len(seen) == 60
    assert client.get("/moderate/api/labels/search?label=eggs", headers=headers).get_json()["error"]["field"] == "label"


def test_activity_counts_checks_verdicts_and_labels_per_moderator(app, keys):
    ids = check(app, keys["site"], [{"content": "Buy cheap pills http://pills.example.com now"},
                                    {"content": "Thanks for the clear explanation"},
                                    {"content": "Great post, thanks"}])
    check(app, keys["other"], [{"content": "hello forum", "site": OTHER_SITE}])
    for token, label, check_id in (("moderator", "spam", ids[0]), ("admin", "ham", ids[1]), ("admin", "ham", ids[2])):
        client = app.test_client()
        r = client.post(f"/api/v1/comments/{check_id}/label", json={"label": label},
                        headers={"Authorization": f"Bearer {keys[token]}"})
        assert r.status_code == 200
    client = app.test_client()
    sign_in(client, keys["moderator"])
    d = client.get("/moderate/api/activity?days=7").get_json()
    assert len(d["days"]) == 7 and d["checks"][-1] == 4 and sum(d["checks"]) == 4
    assert sum(d["verdicts"]["spam"]) + sum(d["verdicts"]["unsure"]) + sum(d["verdicts"]["ham"]) == 4
    assert d["labels"][-1] == 3 and d["labelled"]["ham"][-1] == 2 and d["labelled"]["spam"][-1] == 1
    assert sorted(d["moderators"].values()) == [1, 2]
    assert any(name.startswith("Ada") for name in d["moderators"])
    site_only = client.get("/moderate/api/activity", query_string={"days": 7, "site": OTHER_SITE}).get_json()
    assert sum(site_only["checks"]) == 1 and sum(site_only["labels"]) == 0
    for bad in ("0", "x", "9999"):
        assert client.get(f"/moderate/api/activity?days={bad}").get_json()["error"]["field"] == "days"
    client = app.test_client()
    sign_in(client, keys["scoped"])
    scoped = client.get("/moderate/api/activity?days=7").get_json()
    assert sum(scoped["checks"]) == 1
    assert client.get("/moderate/api/activity", query_string={"site": SITE}).status_code == 403


def test_console_json_needs_a_moderator(app, keys):
    client = app.test_client()
    assert client.get("/moderate/api/sites").status_code == 401
    r = client.get("/moderate/api/sites", headers={"Authorization": f"Bearer {keys['site']}"})
    assert r.status_code == 403
