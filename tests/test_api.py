"""The JSON API through Flask's test client, against the real Redis (SERVICE database, flushed)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest

from service import auth
from service.app import connect, create_app
from tests.service_support import HAM, SPAM, PrivateRedis, service_db, service_redis_url, small_model  # noqa: F401
from training import rediskeys
from training.registry import ServingModel
from training.settings import Settings

SITE_A = "https://a.example.com"
SITE_B = "https://b.example.org"


@pytest.fixture()
def r(service_db):
    return service_db


@pytest.fixture()
def app(r, tmp_path):
    settings = Settings(redis_url=service_redis_url(), secret_key="test-secret", data_dir=tmp_path)
    app = create_app(settings, redis_client=r, serving=ServingModel.fixed(small_model(), "v-test"))
    app.config["TESTING"] = True
    yield app
    app.extensions["winnow"].writer.stop()


@pytest.fixture()
def keys(app):
    store = app.extensions["winnow"].keys
    return {
        "a": store.create(SITE_A, "site", "site a")[0],
        "b": store.create(SITE_B, "site", "site b")[0],
        "mod": store.create("", "moderator", "alice")[0],
        "mod_a": store.create(SITE_A, "moderator", "carol")[0],
        "admin": store.create("", "admin", "root")[0],
    }


@pytest.fixture()
def api(app, keys):
    client = app.test_client()

    def call(method, path, key=None, body=None, raw=None, **kw):
        headers = kw.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {keys[key]}"
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return client.open(path, method=method, data=data, headers=headers, content_type="application/json", **kw)

    call.flush = lambda: app.extensions["winnow"].writer.flush()
    call.client = client
    return call


def error(resp):
    return resp.get_json()["error"]


def test_check_answers_verdict_with_reasons_and_model_version(api):
    spam = api("POST", "/api/v1/check", "a", {"content": SPAM[0]}).get_json()
    ham = api("POST", "/api/v1/check", "a", {"content": HAM[0], "author": "Bo"}).get_json()
    assert set(spam) >= {"id", "verdict", "score", "discard", "reasons", "model_version"}
    assert spam["verdict"] in ("spam", "unsure") and ham["verdict"] == "ham"
    assert spam["score"] > ham["score"]
    assert spam["model_version"] == "v-test"
    assert all(set(x) == {"signal", "weight"} for x in spam["reasons"])


def test_reasons_add_up_to_the_models_decision_value(api, app):
    out = api("POST", "/api/v1/check", "a", {"content": SPAM[2], "author": "Bo"}).get_json()
    api.flush()
    stored = app.extensions["winnow"].checks.get(out["id"])
    verdict = small_model().score(stored.comment)
    assert [r["signal"] for r in out["reasons"]] == [r["signal"] for r in verdict.reasons]
    assert sum(r["weight"] for r in out["reasons"]) == pytest.approx(verdict.decision_value, abs=1e-9)


def test_check_is_stored_with_retention_ttl(api, r, app):
    out = api("POST", "/api/v1/check", "a", {"content": SPAM[1]}).get_json()
    api.flush()
    ttl = r.ttl(f"winnow:check:{out['id']}")
    assert 29 * 86400 < ttl <= 30 * 86400
    got = api("GET", f"/api/v1/checks/{out['id']}", "a").get_json()
    assert got["comment"]["content"] == SPAM[1] and got["site"] == SITE_A


def test_batch_checks_and_refuses_bad_items_naming_them(api):
    ok = api("POST", "/api/v1/check/batch", "a", {"comments": [{"content": c} for c in SPAM[:3]]})
    assert ok.status_code == 200 and len(ok.get_json()["results"]) == 3
    one = api("POST", "/api/v1/check", "a", {"content": SPAM[0]}).get_json()
    assert list(ok.get_json()["results"][0]) == list(one)  # the same fields in the same order
    bad = api("POST", "/api/v1/check/batch", "a", {"comments": [{"content": "x"}, {"author": "no content"}, 7]})
    assert bad.status_code == 400
    fields = [f["field"] for f in error(bad)["fields"]]
    assert fields == ["comments[1].content", "comments[2]"]
    too_many = api("POST", "/api/v1/check/batch", "a", {"comments": [{"content": "x"}] * 101})
    assert too_many.status_code == 400 and error(too_many)["field"] == "comments"


@pytest.mark.parametrize("raw,code,field", [
    (b'{"content": "x"', "bad_json", "body"),
    (b'{"content": "caf\xe9"}', "bad_encoding", "body"),
    (b'{"content": NaN}', "bad_json", "body"),
    (b'["content"]', "invalid", "body"),
    (b'{"content": 5}', "invalid", "content"),
    (b'{"content": "x", "colour": "red"}', "invalid", "colour"),
    (b'{"content": "x", "user_ip": "999.1.1.1"}', "invalid", "user_ip"),
    (b'{"content": "x", "is_test": "yes"}', "invalid", "is_test"),
    (b'{"content": "\\ud800 lone surrogate"}', "invalid", "content"),
    (b'{"content": "x", "ids": {"a": [1]}}', "invalid", "ids"),
    (b'{"content": "x", "ids": {"a": "\\ud800"}}', "invalid", "ids.a"),
    (b'{"content": "x", "ids": {"\\udfff": "1"}}', "invalid", "ids"),
    (b'', "invalid", "body"),
    (b'[' * 100000 + b']' * 100000, "bad_json", "body"),
    (b'{"a": ' * 1000 + b'1' + b'}' * 1000, "bad_json", "body"),  # deep enough for one parser and not the other
    (b'{"content": "hi", "time_to_submit": ' + b"9" * 5000 + b"}", "bad_json", "body"),
])
def test_bad_input_is_a_400_naming_the_field(api, raw, code, field):
    resp = api("POST", "/api/v1/check", "a", raw=raw)
    assert resp.status_code == 400, resp.data
    assert error(resp)["code"] == code and error(resp)["field"] == field


@pytest.mark.parametrize("path,raw,field", [
    ("/api/v1/labels", b'{"site": "https://a.example.org/\\ud800", "items": [{"content": "x", "label": "spam"}]}',
     "site"),
    ("/api/v1/labels", b'{"items": [{"content": "x", "label": "spam", "site": "https://a.example.org/"}, '
                       b'{"content": "y\\udc00", "label": "ham"}]}', "items[1].content"),
    ("/api/v1/models/retrain", b'{"reason": "\\ud800"}', "reason"),
    ("/api/v1/check/batch", b'{"comments": [{"content": "x", "ids": {"post": "\\ud83d"}}]}', "comments[0].ids.post"),
])
def test_a_lone_surrogate_anywhere_in_a_body_is_a_400_naming_where(api, path, raw, field):
    """Not text: nothing could store it or send it on (a check's ids once stopped its writer thread)."""
    resp = api("POST", path, "admin", raw=raw)
    assert resp.status_code == 400, resp.data
    assert error(resp) == {"code": "invalid", "field": field,
                           "message": f"{field}: is not valid UTF-8 text (lone surrogate)"}


@pytest.mark.parametrize("path,raw,field", [
    ("/api/v1/check", b'{"content": "x", "is_test": true, "is_test": false}', "is_test"),
    ("/api/v1/check", b'{"content": "x", "cont\\u0065nt": "y"}', "content"),  # an escape hides nothing
    ("/api/v1/check", b'{"content": "x", "ids": {"post": "1", "post": "2"}}', "post"),
    ("/api/v1/check", b'{"content": "x", "time_to_submit": ' + b"9" * 30 + b', "content": "y"}', "content"),
    ("/api/v1/labels", b'{"items": [{"content": "x", "label": "spam"}, {"content": "y", "label": "ham", '
                       b'"label": "spam"}], "site": "https://a.example.org/"}', "label"),
])
def test_a_member_given_twice_is_a_400_not_the_last_one_silently(api, path, raw, field):
    """JSON parsers keep the last of two members of one name: a check sent as a test and not would have been
    stored as training data, a label of two values taken as the second."""
    resp = api("POST", path, "admin", raw=raw)
    assert resp.status_code == 400, resp.data
    assert error(resp) == {"code": "invalid", "field": field, "message": f"{field}: given twice in one object"}
    # The same names in different objects, and a name that is also a value, are fine.
    ok = api("POST", "/api/v1/check/batch", "a", raw=b'{"comments": [{"content": "content"}, {"content": "y"}]}')
    assert ok.status_code == 200, ok.data


def test_bodies_read_the_same_whichever_json_parser_reads_them(api, app):
    """Integers past 64 bits stay integers (a platform's numeric comment id is kept digit for digit), non-ASCII text
    and escapes arrive unchanged, and a body of whitespace is a missing body."""
    long_id = 12345678901234567890123
    body = b'{"content": "Gr\\u00fc\xc3\x9fe \xf0\x9f\x98\x80 \\"quoted\\"", "ids": {"comment_id": ' + str(long_id).encode() + b"}}"
    out = api("POST", "/api/v1/check", "a", raw=body)
    assert out.status_code == 200, out.data
    api.flush()
    stored = api("GET", f"/api/v1/checks/{out.get_json()['id']}", "a").get_json()
    assert stored["comment"]["content"] == 'Grüße 😀 "quoted"'
    assert stored["refs"] == {"comment_id": str(long_id)}
    blank = api("POST", "/api/v1/check", "a", raw=b" \r\n\t ")
    assert blank.status_code == 400 and error(blank)["field"] == "body"


def test_oversized_content_and_body_are_413(api):
    big = api("POST", "/api/v1/check", "a", {"content": "x" * (64 * 1024 + 1)})
    assert big.status_code == 413 and error(big)["field"] == "content"
    huge = api("POST", "/api/v1/check", "a", raw=b'{"content": "' + b"x" * (1024 * 1024) + b'"}')
    assert huge.status_code == 413 and error(huge)["field"] == "body"


def test_no_model_yet_is_a_503_not_a_500(api, app):
    app.extensions["winnow"].serving = ServingModel.fixed(None, None)
    resp = api("POST", "/api/v1/check", "a", {"content": "x"})
    assert resp.status_code == 503 and error(resp)["code"] == "no_model"


def test_unknown_route_and_method_are_json(api):
    assert error(api("GET", "/api/v1/nope", "a"))["code"] == "not_found"
    resp = api("GET", "/api/v1/check", "a")
    assert resp.status_code == 405 and error(resp)["code"] == "method_not_allowed"
    # A doubled slash is an unknown path, not a redirect to a URL built from the Host header.
    doubled = api("GET", "/api/v1//queue", "admin", headers={"Host": "evil.example"})
    assert doubled.status_code == 404 and "Location" not in doubled.headers
    assert error(doubled)["code"] == "not_found"


def test_every_answer_says_nosniff(api, app):
    """Answers echo text callers sent (Akismet's text/plain, CSV); none may be sniffed into a page."""
    web = app.test_client()
    for resp in (api("GET", "/api/v1/nope", "a"), web.get("/healthz"), web.post("/1.1/verify-key", data={}),
                 api("POST", "/api/v1/check", "a", {"content": "hello"})):
        assert resp.headers["X-Content-Type-Options"] == "nosniff", resp.request.path


def test_auth_refusals_are_json_401_and_403(api, app):
    assert api("POST", "/api/v1/check", None, {"content": "x"}).status_code == 401
    wrong = api("POST", "/api/v1/check", None, {"content": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and error(wrong)["field"] == "Authorization"
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    basic = api("POST", "/api/v1/check", None, {"content": "x"}, headers={"Authorization": "Basic Zm9v"})
    assert basic.status_code == 401
    other = api("POST", "/api/v1/check", "a", {"content": "x", "site": SITE_B})
    assert other.status_code == 403 and error(other)["field"] == "site"
    same = api("POST", "/api/v1/check", "a", {"content": "x", "site": "A.example.com/"})
    assert same.status_code == 200
    assert api("GET", "/api/v1/queue", "a").status_code == 403
    assert api("GET", "/api/v1/labels", "a").status_code == 403
    no_site = api("POST", "/api/v1/check", "mod", {"content": "x"})
    assert no_site.status_code == 400 and error(no_site)["field"] == "site"
    assert api("POST", "/api/v1/check", "mod", {"content": "x", "site": SITE_B}).status_code == 200


def test_revoked_key_stops_working_within_the_cache_time(api, app, keys):
    store = app.extensions["winnow"].keys
    store.cache_seconds = 0.2
    assert api("POST", "/api/v1/check", "b", {"content": "x"}).status_code == 200
    record = store.authenticate(keys["b"])
    assert store.revoke(record.id)
    time.sleep(0.25)
    assert api("POST", "/api/v1/check", "b", {"content": "x"}).status_code == 401
    assert store.revoke("nosuchid") is False


def test_keys_are_stored_hashed_and_shaped(app, r, keys):
    assert len(keys["a"]) == 12 and keys["a"].isalnum()
    assert keys["mod"].startswith("wm_") and len(keys["mod"]) == 35
    dump = b"".join(v for k in r.keys("winnow:key*") for v in (r.hvals(k) if r.type(k) == b"hash" else []))
    assert keys["a"].encode() not in dump and keys["mod"].encode() not in dump
    listed = app.extensions["winnow"].keys.list(SITE_A)
    assert {k.role for k in listed} == {"site", "moderator"}


def test_label_check_relabel_keeps_audit_and_leaves_queue(api):
    cid = api("POST", "/api/v1/check", "a", {"content": SPAM[2]}).get_json()["id"]
    api.flush()
    assert [i["id"] for i in api("GET", "/api/v1/queue", "mod").get_json()["items"]] == [cid]
    first = api("POST", f"/api/v1/comments/{cid}/label", "mod", {"label": "spam"})
    assert first.status_code == 200 and first.get_json()["previous"] is None
    assert api("GET", "/api/v1/queue", "mod").get_json()["items"] == []
    second = api("POST", f"/api/v1/comments/{cid}/label", "admin", {"label": "HAM"}).get_json()
    assert second["previous"] == "spam" and second["label"] == "ham"
    detail = api("GET", f"/api/v1/labels/{cid}", "mod").get_json()
    assert detail["label"] == "ham" and detail["comment"]["content"] == SPAM[2]
    assert [(a["from"], a["to"]) for a in detail["audit"]] == [(None, "spam"), ("spam", "ham")]
    assert detail["audit"][0]["by"] == "alice (" + detail["audit"][0]["by"].split("(")[1]
    bad = api("POST", f"/api/v1/comments/{cid}/label", "mod", {"label": "maybe"})
    assert bad.status_code == 400 and error(bad)["field"] == "label"
    assert api("POST", "/api/v1/comments/nosuch/label", "mod", {"label": "spam"}).status_code == 404


def test_a_label_outlives_its_check_and_can_still_be_changed_by_its_id(api, r):
    cid = api("POST", "/api/v1/check", "a", {"content": SPAM[0]}).get_json()["id"]
    api.flush()
    assert api("POST", f"/api/v1/comments/{cid}/label", "a", {"label": "spam"}).status_code == 200
    r.delete(rediskeys.CHECK.format(id=cid))  # past its retention
    changed = api("POST", f"/api/v1/comments/{cid}/label", "a", {"label": "ham"})
    assert changed.status_code == 200 and changed.get_json()["previous"] == "spam"
    detail = api("GET", f"/api/v1/labels/{cid}", "mod").get_json()
    assert detail["label"] == "ham" and [(a["from"], a["to"]) for a in detail["audit"]] == [
        (None, "spam"), ("spam", "ham")]
    assert api("POST", f"/api/v1/comments/{cid}/label", "b", {"label": "spam"}).status_code == 404  # not b's
    gone = api("POST", "/api/v1/check", "a", {"content": SPAM[1]}).get_json()["id"]
    api.flush()
    r.delete(rediskeys.CHECK.format(id=gone))  # expired unlabelled: nothing to label
    assert api("POST", f"/api/v1/comments/{gone}/label", "a", {"label": "spam"}).status_code == 404
    # An example a moderator added with its content is no check's feedback: a site key cannot flip it by its id.
    example = api("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": [
        {"content": "Win a free phone http://x.example", "label": "spam"}]}).get_json()["labels"][0]["id"]
    flip = api("POST", f"/api/v1/comments/{example}/label", "a", {"label": "ham"})
    assert flip.status_code == 404 and "POST /api/v1/labels" in error(flip)["message"]  # says how, not "expired"
    assert api("GET", f"/api/v1/labels/{example}", "mod").get_json()["label"] == "spam"
    assert "retention" in error(api("POST", f"/api/v1/comments/{example}/label", "b", {"label": "ham"}))["message"]


def test_two_moderators_on_one_comment_never_silently_overwrite_each_other(api, r):
    """The console labels with a condition: a colleague's label that landed first is kept and reported (409), and
    an undo takes back only the label it gave, never a colleague's."""
    cid = api("POST", "/api/v1/check", "a", {"content": SPAM[2]}).get_json()["id"]
    api.flush()
    path = f"/api/v1/comments/{cid}/label"
    assert api("POST", path, "mod", {"label": "spam", "expect": None}).status_code == 200  # alice, first
    late = api("POST", path, "admin", {"label": "ham", "expect": None})  # root's page still shows it unlabelled
    assert late.status_code == 409
    assert error(late)["code"] == "label_changed" and error(late)["label"] == "spam"
    assert error(late)["labelled_by"].startswith("alice") and "nothing was stored" in error(late)["message"]
    same = api("POST", path, "admin", {"label": "spam", "expect": None})  # the same label is still someone else's
    assert same.status_code == 409
    detail = api("GET", f"/api/v1/labels/{cid}", "mod").get_json()
    assert detail["label"] == "spam" and [(a["from"], a["to"]) for a in detail["audit"]] == [(None, "spam")]

    # Relabel and undo on a label as it was seen.
    assert api("POST", path, "admin", {"label": "ham", "expect": "ham"}).status_code == 409
    assert api("POST", path, "admin", {"label": "ham", "expect": "spam"}).get_json()["previous"] == "spam"
    refused = api("POST", f"/moderate/api/labels/{cid}/undo", "mod", {"expect": "spam"})  # alice undoes hers
    assert refused.status_code == 409 and error(refused)["label"] == "ham"
    assert api("GET", f"/api/v1/labels/{cid}", "mod").get_json()["label"] == "ham"  # root's label stays
    assert api("POST", f"/moderate/api/labels/{cid}/undo", "admin", {"expect": "ham"}).get_json()["removed"] == "ham"
    assert api("GET", "/api/v1/queue", "mod").get_json()["items"][0]["id"] == cid  # back in the queue

    # A label changed and changed back meanwhile is someone else's: the stamp the caller saw tells them apart.
    mine = api("POST", path, "mod", {"label": "spam", "expect": None}).get_json()  # alice, from the queue
    assert api("POST", f"/moderate/api/labels/{cid}", "admin", {"label": "ham", "expect": "spam"}).status_code == 200
    assert api("POST", f"/moderate/api/labels/{cid}", "admin", {"label": "spam", "expect": "ham"}).status_code == 200
    aba = api("POST", f"/moderate/api/labels/{cid}/undo", "mod", {"expect": "spam", "expect_at": mine["labelled_at"]})
    assert aba.status_code == 409 and error(aba)["label"] == "spam" and error(aba)["labelled_by"].startswith("root")
    assert "the spam label it had when it was read" in error(aba)["message"]
    now = api("GET", f"/api/v1/labels/{cid}", "mod").get_json()
    assert now["label"] == "spam"  # root's, kept
    undone = api("POST", f"/moderate/api/labels/{cid}/undo", "admin", {"expect": "spam",
                                                                          "expect_at": now["labelled_at"]})
    assert undone.status_code == 200
    # A site key learns what is stored, never a moderator's name.
    assert api("POST", path, "mod", {"label": "ham", "expect": None}).status_code == 200
    site = api("POST", path, "a", {"label": "spam", "expect": None})
    assert site.status_code == 409 and error(site)["labelled_by"] is None and "alice" not in error(site)["message"]
    wrong = api("POST", path, "mod", {"label": "spam", "expect_at": 1.5})
    assert wrong.status_code == 400 and error(wrong)["field"] == "expect_at"
    api("POST", f"/moderate/api/labels/{cid}/undo", "admin", {"expect": "ham"})

    # A label of an expired check is conditional too; a bad condition is a 400 naming it.
    assert api("POST", path, "mod", {"label": "spam", "expect": None}).status_code == 200
    r.delete(rediskeys.CHECK.format(id=cid))
    assert api("POST", path, "a", {"label": "ham", "expect": None}).status_code == 409
    bad = api("POST", path, "mod", {"label": "ham", "expect": "maybe"})
    assert bad.status_code == 400 and error(bad)["field"] == "expect"
    relabel = api("POST", f"/moderate/api/labels/{cid}", "mod", {"label": "ham", "expect": "ham"})
    assert relabel.status_code == 409 and error(relabel)["label"] == "spam"


def test_a_label_taken_back_still_shows_its_trail_in_its_sites_scope(api, app):
    stored = api("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": [
        {"content": "Win a free phone http://x.example", "label": "spam"}]}).get_json()["labels"][0]
    undo = api("POST", f"/moderate/api/labels/{stored['id']}/undo", "mod")
    assert undo.status_code == 200
    detail = api("GET", f"/api/v1/labels/{stored['id']}", "mod_a")
    assert detail.status_code == 200
    body = detail.get_json()
    assert (body["id"], body["site"], body["label"]) == (stored["id"], SITE_A, None)
    assert [(a["from"], a["to"]) for a in body["audit"]] == [(None, "spam"), ("spam", None)]
    assert body["audit"][-1]["by"].startswith("alice")
    mod_b = app.extensions["winnow"].keys.create(SITE_B, "moderator", "bob")[0]
    other = api("GET", f"/api/v1/labels/{stored['id']}", headers={"Authorization": f"Bearer {mod_b}"})
    assert other.status_code == 404  # another site's trail stays hidden
    assert api("GET", "/api/v1/labels/never-labelled", "mod").status_code == 404


def test_a_site_never_reaches_another_sites_checks_or_labels(api):
    cid = api("POST", "/api/v1/check", "a", {"content": SPAM[3]}).get_json()["id"]
    api("POST", "/api/v1/check", "b", {"content": SPAM[4]})
    api.flush()
    assert api("POST", f"/api/v1/comments/{cid}/label", "b", {"label": "ham"}).status_code == 404
    assert api("GET", f"/api/v1/checks/{cid}", "b").status_code == 404
    assert api("POST", f"/api/v1/comments/{cid}/label", "a", {"label": "spam"}).status_code == 200
    scoped = api("GET", "/api/v1/queue", "mod_a").get_json()["items"]
    assert scoped == []  # a's only check is labelled; b's is out of scope
    assert api("GET", f"/api/v1/queue?site={SITE_B}", "mod_a").status_code == 403
    assert len(api("GET", "/api/v1/queue", "mod").get_json()["items"]) == 1
    labels = api("GET", "/api/v1/labels", "mod_a").get_json()["items"]
    assert [x["site"] for x in labels] == [SITE_A]
    export = api("GET", f"/api/v1/labels/export?site={SITE_B}", "mod_a")
    assert export.status_code == 403


def test_queue_orders_by_uncertainty_and_filters_by_verdict(api, app):
    texts = [HAM[0], SPAM[0], "click here for more", "free stuff http://x.example.com now", HAM[1]]
    out = [api("POST", "/api/v1/check", "a", {"content": t}).get_json() for t in texts]
    api.flush()
    items = api("GET", "/api/v1/queue", "mod").get_json()["items"]
    distances = [abs(i["score"] - 0.5) for i in items]
    assert distances == sorted(distances) and len(items) == 5
    spam_only = api("GET", "/api/v1/queue?verdict=spam", "mod").get_json()["items"]
    assert {i["id"] for i in spam_only} == {o["id"] for o in out if o["verdict"] == "spam"}
    pages, cursor = [], None
    while True:
        got = api("GET", "/api/v1/queue?limit=2" + (f"&cursor={cursor}" if cursor else ""), "mod").get_json()
        pages.append([i["id"] for i in got["items"]])
        cursor = got["next_cursor"]
        if not cursor:
            break
    assert [i for p in pages for i in p] == [i["id"] for i in items] and len(pages) == 3
    assert error(api("GET", "/api/v1/queue?verdict=meh", "mod"))["field"] == "verdict"
    assert error(api("GET", "/api/v1/queue?cursor=junk", "mod"))["field"] == "cursor"
    assert error(api("GET", "/api/v1/queue?limit=0", "mod"))["field"] == "limit"
    for odd in ("1_0", "%D9%A1%D9%A2", "+5", "%205", "9" * 5000):  # underscores, other digits, signs, spaces
        assert error(api("GET", f"/api/v1/queue?limit={odd}", "mod"))["field"] == "limit", odd


def test_is_test_checks_are_answered_but_never_training_data(api):
    out = api("POST", "/api/v1/check", "a", {"content": SPAM[0], "is_test": True}).get_json()
    assert out["verdict"] in ("spam", "unsure")
    api.flush()
    assert api("GET", "/api/v1/queue", "mod").get_json()["items"] == []
    resp = api("POST", f"/api/v1/comments/{out['id']}/label", "mod", {"label": "spam"})
    assert resp.status_code == 409 and error(resp)["code"] == "test_check"


def test_site_settings_thresholds_shadow_and_trusted_roles(api):
    assert api("PUT", f"/api/v1/sites/{SITE_A}/settings", "mod", {"spam_threshold": 0.2}).status_code == 403
    assert api("GET", f"/api/v1/sites/{SITE_A}/settings", "a").status_code == 403
    bad = api("PUT", f"/api/v1/sites/{SITE_A}/settings", "admin", {"unsure_threshold": 0.95})
    assert bad.status_code == 400 and error(bad)["field"] == "spam_threshold"
    bad = api("PUT", f"/api/v1/sites/{SITE_A}/settings", "admin", {"spam_threshold": "high"})
    assert error(bad)["field"] == "spam_threshold"
    ok = api("PUT", "/api/v1/sites/a.example.com/settings", "admin",
             {"unsure_threshold": 0.0, "spam_threshold": 0.0, "discard_threshold": 0.0})
    assert ok.status_code == 200 and ok.get_json()["site"] == SITE_A and ok.get_json()["warnings"] == []
    got = api("GET", f"/api/v1/sites/{SITE_A}/settings", "mod_a").get_json()
    assert got["spam_threshold"] == 0.0 and "spam_threshold" in got["overridden"]
    app_sites = api.client.application.extensions["winnow"].sites
    app_sites._cache.clear()
    out = api("POST", "/api/v1/check", "a", {"content": HAM[2]}).get_json()
    assert out["verdict"] == "spam" and out["discard"] is True
    trusted = api("POST", "/api/v1/check", "a", {"content": SPAM[0], "user_role": "Editor"}).get_json()
    assert trusted["verdict"] == "ham" and trusted["discard"] is False
    api("PUT", f"/api/v1/sites/{SITE_A}/settings", "admin", {"shadow": True})
    app_sites._cache.clear()
    shadow = api("POST", "/api/v1/check", "a", {"content": SPAM[1]}).get_json()
    assert shadow["verdict"] == "ham" and shadow["shadow"] is True
    api.flush()
    queued = {i["id"]: i for i in api("GET", "/api/v1/queue", "mod").get_json()["items"]}
    assert queued[shadow["id"]]["verdict"] == "spam" and queued[shadow["id"]]["answered"] == "ham"
    assert trusted["id"] not in queued
    reset = api("PUT", f"/api/v1/sites/{SITE_A}/settings", "admin",
                {"unsure_threshold": None, "spam_threshold": None, "discard_threshold": None, "shadow": None})
    assert reset.get_json()["overridden"] == []
    # Site B never saw A's settings.
    assert api("POST", "/api/v1/check", "b", {"content": HAM[2]}).get_json()["verdict"] == "ham"


def test_settings_for_a_site_nothing_is_known_by_say_so(api):
    """A bare host is read as https: an admin setting shadow mode for "a.example.com" while the key's site is
    http://... changed a site no check is ever sent for, and the 200 said nothing about it."""
    keyed = api("GET", f"/api/v1/sites/{SITE_A}/settings", "admin").get_json()
    assert keyed["warnings"] == []
    other_scheme = "http://a.example.com"
    put = api("PUT", f"/api/v1/sites/{other_scheme}/settings", "admin", {"shadow": True})
    assert put.status_code == 200 and put.get_json()["site"] == other_scheme  # kept: an unscoped token may use it
    [warning] = put.get_json()["warnings"]
    assert "no site key belongs to http://a.example.com" in warning and f"did you mean {SITE_A}?" in warning
    [warning] = api("GET", "/api/v1/sites/nope.example/settings", "admin").get_json()["warnings"]
    assert "https://nope.example" in warning and "did you mean" not in warning


def test_settings_stored_are_answered_even_when_the_lookup_for_warnings_fails(api, monkeypatch):
    """The settings were stored: a Redis error while looking up keys and checks for the warning must not turn the
    answer into a 503 that says nothing was stored."""
    import redis as redis_lib

    from training import activity

    def down(*args, **kwargs):
        raise redis_lib.ConnectionError("gone")

    monkeypatch.setattr(activity, "sites_seen", down)
    put = api("PUT", "/api/v1/sites/http://fresh.example/settings", "admin", {"shadow": True})
    assert put.status_code == 200 and put.get_json()["shadow"] is True
    assert "could not be looked up" in put.get_json()["warnings"][0]
    monkeypatch.undo()
    assert api("GET", "/api/v1/sites/http://fresh.example/settings", "admin").get_json()["shadow"] is True


def test_a_filled_honeypot_is_spam_whatever_the_text(api):
    """The site's hidden field filled in is a bot: the model has never seen the signal in its training data, so
    the policy answers it, and says so first among the reasons."""
    plain = api("POST", "/api/v1/check", "a", {"content": HAM[0], "honeypot": False}).get_json()
    assert plain["verdict"] == "ham" and plain["reasons"][0]["signal"] != "honeypot filled"
    trapped = api("POST", "/api/v1/check", "a", {"content": HAM[0], "honeypot": True}).get_json()
    assert trapped["verdict"] == "spam" and trapped["discard"] is False
    assert trapped["reasons"][0] == {"signal": "honeypot filled", "weight": 0.0}
    assert trapped["score"] == plain["score"]  # the model's own probability, untouched
    weights = sum(r["weight"] for r in trapped["reasons"])
    assert weights == pytest.approx(sum(r["weight"] for r in plain["reasons"]))
    staff = api("POST", "/api/v1/check", "a", {"content": HAM[0], "honeypot": True, "user_role": "editor"})
    assert staff.get_json()["verdict"] == "ham"  # a trusted role still wins
    api.flush()
    queued = {i["id"]: i for i in api("GET", "/api/v1/queue", "mod").get_json()["items"]}
    # Queued like any check, at the model's own verdict: a moderator's label says whether the model was wrong.
    assert queued[trapped["id"]]["verdict"] == "ham" and queued[trapped["id"]]["answered"] == "spam"


def test_post_labels_is_all_or_nothing_with_item_fields(api, r):
    items = [{"content": SPAM[0], "label": "spam"}, {"content": HAM[0], "label": "ham", "author": "Jo"}]
    bad = api("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": items + [
        {"label": "spam"}, {"content": "x", "label": "eggs"}, {"content": "x" * 70000, "label": "spam"}]})
    assert bad.status_code == 400
    assert [f["field"] for f in error(bad)["fields"]] == ["items[2].content", "items[3].label", "items[4].content"]
    assert not r.keys("winnow:label:*")
    ok = api("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": items})
    assert ok.status_code == 201 and ok.get_json()["stored"] == 2
    again = api("POST", "/api/v1/labels", "mod_a", {"items": [{"content": SPAM[0], "label": "ham"}]}).get_json()
    assert again["labels"][0]["previous"] == "spam"  # the same comment again relabels, never duplicates
    assert api("POST", "/api/v1/labels", "mod_a", {"items": [{"content": "x", "label": "spam",
                                                               "site": SITE_B}]}).status_code == 403
    # New training examples feed the model every site shares: a site key gives feedback on its own checks only.
    assert api("POST", "/api/v1/labels", "a", {"items": [{"content": "x", "label": "spam"}]}).status_code == 403
    no_site = api("POST", "/api/v1/labels", "mod", {"items": [{"content": "x", "label": "spam"}]})
    assert error(no_site)["fields"][0]["field"] == "items[0].site"
    assert api("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": [
        {"content": "x", "label": "spam"}] * 1001}).status_code == 400


def test_labels_list_filters_and_pages_and_export_streams_jsonl(api, app):
    store = app.extensions["winnow"].labels
    for i, text in enumerate(SPAM[:3] + HAM[:3]):
        site = SITE_A if i % 2 == 0 else SITE_B
        api("POST", "/api/v1/labels", "mod", {"site": site, "items": [
            {"content": text, "label": "spam" if text in SPAM else "ham"}]})
    everything = api("GET", "/api/v1/labels", "mod").get_json()["items"]
    assert len(everything) == 6
    times = [x["labelled_at"] for x in everything]
    assert times == sorted(times, reverse=True)
    spam_a = api("GET", f"/api/v1/labels?label=spam&site={SITE_A}", "mod").get_json()["items"]
    assert {x["comment"]["content"] for x in spam_a} == {SPAM[0], SPAM[2]}
    middle = times[2]
    since = api("GET", f"/api/v1/labels?since={middle}", "mod").get_json()["items"]
    assert len(since) == 3
    assert error(api("GET", "/api/v1/labels?since=yesterday", "mod"))["field"] == "since"
    iso = api("GET", "/api/v1/labels?until=2000-01-01T00:00:00Z", "mod").get_json()["items"]
    assert iso == []
    seen, cursor = [], None
    while True:
        got = api("GET", "/api/v1/labels?limit=4" + (f"&cursor={cursor}" if cursor else ""), "mod").get_json()
        seen += [x["id"] for x in got["items"]]
        if not (cursor := got["next_cursor"]):
            break
    assert seen == [x["id"] for x in everything]
    export = api("GET", "/api/v1/labels/export", "mod_a")
    assert export.mimetype == "application/x-ndjson"
    rows = [json.loads(line) for line in export.data.decode().splitlines()]
    assert len(rows) == 3 and {x["site"] for x in rows} == {SITE_A}
    examples = list(store.iter_examples())
    assert len(examples) == 6 and examples[0][1] in ("spam", "ham")
    assert store.count_since(0) == 6 and store.count_since(time.time() + 10) == 0


def test_an_export_ends_where_it_started_so_a_label_changed_meanwhile_is_written_once(api, app):
    ids = []
    for start in (0, 600):  # at most 1,000 a request
        items = [{"content": f"comment number {i}", "label": "ham"} for i in range(start, start + 600)]
        ids += [x["id"] for x in api("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": items})
                .get_json()["labels"]]
    rows = app.extensions["winnow"].labels.export(chunk=500)
    first = next(rows)
    api("POST", f"/moderate/api/labels/{first.id}", "mod", {"label": "spam"})  # while the export runs
    api("POST", f"/moderate/api/labels/{ids[-1]}", "mod", {"label": "spam"})  # not yet reached
    exported = [first] + list(rows)
    counts = {}
    for x in exported:
        counts[x.id] = counts.get(x.id, 0) + 1
    assert max(counts.values()) == 1 and set(counts) == set(ids) - {ids[-1]}  # once each; the moved one later
    after = api("GET", f"/api/v1/labels/export?since={exported[-1].labelled_at}", "mod").data.decode()
    changed = {json.loads(line)["id"]: json.loads(line)["label"] for line in after.splitlines()}
    assert changed[first.id] == "spam" and changed[ids[-1]] == "spam"  # the next export has both changes


def test_a_redis_that_refuses_writes_is_a_503_everywhere_not_a_500(api, r):
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")
    try:
        settings = api("PUT", "/api/v1/sites/a.example.com/settings", "admin", {"shadow": True})
        label = api("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": [{"content": "x", "label": "spam"}]})
    finally:
        r.config_set("maxmemory", "0")
    assert (settings.status_code, error(settings)["code"]) == (503, "store_unavailable")
    assert label.status_code == 503 and "nothing was stored" in error(label)["message"]
    assert api("GET", "/api/v1/sites/a.example.com/settings", "admin").get_json()["shadow"] is False


def test_overturns_are_counted_for_the_learning_loop(api, app):
    out = api("POST", "/api/v1/check", "a", {"content": HAM[3]}).get_json()
    assert out["verdict"] == "ham"
    api("POST", f"/api/v1/comments/{out['id']}/label", "mod", {"label": "spam"})
    assert app.extensions["winnow"].labels.overturns_since(0) == 1


def test_console_session_needs_csrf_for_writes(api, app, keys):
    record = app.extensions["winnow"].keys.authenticate(keys["mod"])
    app.extensions["winnow"].redis.set(rediskeys.CONSOLE_SESSION.format(id="session-1"), record.id)
    with api.client.session_transaction() as sess:
        sess[auth.SESSION_KEY] = "session-1"
        sess[auth.CSRF_SESSION_KEY] = "token-123"
    cid = api("POST", "/api/v1/check", "a", {"content": SPAM[0]}).get_json()["id"]
    api.flush()
    assert api("GET", "/api/v1/queue").status_code == 200
    refused = api("POST", f"/api/v1/comments/{cid}/label", None, {"label": "spam"})
    assert refused.status_code == 403 and error(refused)["code"] == "csrf"
    wrong = api("POST", f"/api/v1/comments/{cid}/label", None, {"label": "spam"},
                headers={"X-CSRF-Token": "token-124"})
    assert wrong.status_code == 403
    ok = api("POST", f"/api/v1/comments/{cid}/label", None, {"label": "spam"},
             headers={"X-CSRF-Token": "token-123"})
    assert ok.status_code == 200


@contextlib.contextmanager
def _app_on_private_redis(tmp_path):
    """An app on a redis-server of the test's own, which it may kill or freeze, with the client the web uses."""
    server = PrivateRedis(tmp_path).start()
    settings = Settings(redis_url=server.url, secret_key="test-secret", data_dir=tmp_path)
    app = create_app(settings, redis_client=connect(settings), serving=ServingModel.fixed(small_model(), "v-test"))
    svc = app.extensions["winnow"]
    try:
        yield server, app, svc
    finally:
        svc.writer.stop()
        svc.redis.close()
        svc.redis.connection_pool.disconnect()
        server.stop()


def test_redis_down_check_still_scores_labels_answer_503_and_recover(tmp_path):
    with _app_on_private_redis(tmp_path) as (server, app, svc):
        key = svc.keys.create(SITE_A, "site")[0]
        token = svc.keys.create("", "moderator", "alice")[0]
        client = app.test_client()

        def post(path, body, who):
            return client.post(path, json=body, headers={"Authorization": f"Bearer {who}"})

        cid = post("/api/v1/check", {"content": SPAM[0]}, key).get_json()["id"]
        assert client.get("/api/v1/queue", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert svc.writer.flush()
        server.stop()
        down = post("/api/v1/check", {"content": SPAM[1]}, key)
        assert down.status_code == 200 and down.get_json()["verdict"] in ("spam", "unsure")
        label = post(f"/api/v1/comments/{cid}/label", {"label": "spam"}, token)
        assert label.status_code == 503 and error(label)["code"] == "store_unavailable"
        new = post("/api/v1/labels", {"site": SITE_A, "items": [{"content": "x", "label": "ham"}]}, token)
        assert new.status_code == 503
        assert svc.writer.size() == 1
        server.start()
        assert svc.writer.flush(timeout=10)
        buffered = down.get_json()["id"]
        assert post(f"/api/v1/comments/{buffered}/label", {"label": "spam"}, token).status_code == 200
        assert post(f"/api/v1/comments/{cid}/label", {"label": "spam"}, token).status_code == 200


def test_a_hung_redis_is_answered_503_after_one_timeout_not_three(tmp_path):
    with _app_on_private_redis(tmp_path) as (server, app, svc):
        key = svc.keys.create(SITE_A, "site")[0]
        token = svc.keys.create("", "moderator", "alice")[0]
        client = app.test_client()
        moderator = {"Authorization": f"Bearer {token}"}
        cid = client.post("/api/v1/check", json={"content": SPAM[0]},
                          headers={"Authorization": f"Bearer {key}"}).get_json()["id"]
        assert svc.writer.flush()
        os.kill(server.process.pid, signal.SIGSTOP)  # it hangs: connections open, nothing answered
        try:
            for method, path, body in [("POST", f"/api/v1/comments/{cid}/label", {"label": "spam"}),
                                       ("POST", "/api/v1/labels", {"site": SITE_A, "items": [
                                           {"content": "x", "label": "ham"}]}),
                                       ("GET", "/api/v1/queue", None)]:
                started = time.monotonic()
                resp = client.open(path, method=method, json=body, headers=moderator)
                took = time.monotonic() - started
                assert resp.status_code == 503 and error(resp)["code"] == "store_unavailable"
                assert took < 4.0, (path, took)  # one 2 s socket timeout (three were 6 s and more)
            check = client.post("/api/v1/check", json={"content": SPAM[1]}, headers={"Authorization": f"Bearer {key}"})
            assert check.status_code == 200  # scoring needs no Redis
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert client.post(f"/api/v1/comments/{cid}/label", json={"label": "spam"}, headers=moderator).status_code == 200


@pytest.mark.parametrize("query", ["since=nan", "until=NaN", "since=inf", "since=9999-12-31T23:59:59-23:59",
                                   "until=0001-01-01T00:00:00%2B05:00", "since=yesterday"])
def test_label_time_filters_refuse_what_is_not_a_time(api, query):
    for path in ("/api/v1/labels", "/api/v1/labels/export"):
        r = api("GET", f"{path}?{query}", "mod")
        assert r.status_code == 400, (path, query, r.get_data(as_text=True))
        assert error(r)["field"] == query.split("=")[0]


def test_dates_at_the_edge_of_the_calendar_are_a_400_naming_the_field(api):
    r = api("POST", "/api/v1/check", "a", {"content": "hello", "created_at": "9999-12-31T23:59:59-23:59"})
    assert r.status_code == 400 and error(r)["field"] == "created_at"


def test_the_same_comment_twice_in_one_label_batch_is_refused_naming_both(api, r):
    items = [{"content": SPAM[0], "label": "spam"}, {"content": HAM[0], "label": "ham"},
             {"content": SPAM[0], "label": "ham"}, {"content": HAM[1], "label": "ham"},
             {"content": SPAM[0], "label": "spam", "site": SITE_A}, {"content": HAM[1], "label": "spam"}]
    bad = api("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": items})
    assert bad.status_code == 400, bad.get_data(as_text=True)
    assert [(f["field"], f["message"]) for f in error(bad)["fields"]] == [
        ("items[2].content", "repeats items[0]"), ("items[4].content", "repeats items[0]"),
        ("items[5].content", "repeats items[3]")]
    assert not r.keys("winnow:label:*")
    # The same text on two sites is two comments.
    two_sites = api("POST", "/api/v1/labels", "mod", {"items": [{"content": SPAM[0], "label": "spam", "site": SITE_A},
                                                               {"content": SPAM[0], "label": "spam", "site": SITE_B}]})
    assert two_sites.status_code == 201 and two_sites.get_json()["stored"] == 2


def test_a_check_can_be_labelled_at_once_through_another_web_process(app, keys, tmp_path):
    """Checks are written behind the answer; a label by id that reaches another process waits for it to land."""
    settings = Settings(redis_url=service_redis_url(), secret_key="test-secret", data_dir=tmp_path)
    other = create_app(settings, redis_client=connect(settings), serving=ServingModel.fixed(small_model(), "v-test"))
    try:
        first, second = app.test_client(), other.test_client()
        for _ in range(5):
            cid = first.post("/api/v1/check", json={"content": SPAM[0]},
                             headers={"Authorization": f"Bearer {keys['a']}"}).get_json()["id"]
            r = second.post(f"/api/v1/comments/{cid}/label", json={"label": "spam"},
                            headers={"Authorization": f"Bearer {keys['mod']}"})
            assert r.status_code == 200, r.get_json()
        # An id that was never made is still answered at once, even one made up to look a moment old (or a
        # moment ahead): only ids this deployment issued (their tag is keyed by its secret) are waited for.
        now_ms = int(time.time() * 1000)
        for made_up in ("0" * 11 + "a" * 21, f"{now_ms:011x}{'a' * 21}", f"{now_ms + 900:011x}0123456789abc01234567",
                        f"{now_ms:011x}é{'a' * 20}"):
            started = time.monotonic()
            missing = second.post(f"/api/v1/comments/{made_up}/label", json={"label": "spam"},
                                  headers={"Authorization": f"Bearer {keys['mod']}"})
            assert missing.status_code == 404 and time.monotonic() - started < 0.5, made_up
    finally:
        other.extensions["winnow"].writer.stop()
