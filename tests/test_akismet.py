"""The Akismet face against a live Winnow on loopback, driven by the real `akismet` client (sync and async) and by
raw form posts shaped like the WordPress plugin's. Redis: the AKISMET test database (10), flushed per module."""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import re
import threading
import urllib.parse

import akismet
import httpx
import pytest
import redis
from werkzeug.serving import make_server

from service import akismet as face
from service.app import create_app
from training import rediskeys
from training.registry import ServingModel
from training.schema import Comment
from training.settings import Settings

AKISMET_DB = 10
BLOG = "https://blog.example.com"
OTHER_BLOG = "https://shop.example.com/"
IP = "203.0.113.7"

TRAIN_SPAM = [
    "Buy cheap pills now at http://pills.example.com best price guaranteed",
    "Click here to win a free iPhone http://win.example.net limited offer",
    "Cheap viagra online, no prescription needed http://rx.example.com",
    "Earn $5000 a week from home, click http://money.example.biz now",
    "FREE gift card!!! visit http://gift.example.info today",
    "Make money fast, click this link http://fast.example.com casino bonus",
]
TRAIN_HAM = [
    "Thanks for the clear explanation of the migration steps.",
    "I tried this on Debian and it worked after installing the headers.",
    "Great post, the part about indexes helped me a lot.",
    "Could you write a follow-up about backups and restores?",
    "I disagree with the second point, caching is not always faster.",
    "The benchmark numbers look plausible, did you pin the CPU frequency?",
]
# One comment per tier; the fixture places the site's thresholds between their real scores.
HAM_TEXT = "Thanks, the explanation of the indexes was clear and helpful."
UNSURE_TEXT = "Interesting post, click here"
SPAM_TEXT = "Cheap pills, click http://pills.example.com now"
DISCARD_TEXT = "Cheap pills free casino click http://a.example.com buy now money fast win free iPhone gift card"


def _redis_url() -> str:
    base = os.environ.get("WINNOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    return re.sub(r"/\d+$", "", base) + f"/{AKISMET_DB}"


@functools.lru_cache(maxsize=1)
def _model():
    from training.model import train

    comments = [Comment(content=t) for t in TRAIN_SPAM + TRAIN_HAM]
    return train(comments, ["spam"] * len(TRAIN_SPAM) + ["ham"] * len(TRAIN_HAM), C=10.0)


def _thresholds(model) -> dict[str, float]:
    scores = [model.score(Comment(content=t)).score for t in (HAM_TEXT, UNSURE_TEXT, SPAM_TEXT, DISCARD_TEXT)]
    assert scores == sorted(scores) and len(set(scores)) == 4, f"test comments no longer order by score: {scores}"
    mid = [(a + b) / 2 for a, b in zip(scores, scores[1:])]
    return {"unsure_threshold": mid[0], "spam_threshold": mid[1], "discard_threshold": mid[2]}


class LiveServer:
    """A Winnow app served over real HTTP on a free loopback port, in a thread."""

    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def _rewrite(server: LiveServer, request: httpx.Request) -> None:
    # Only the connection moves: the Host header still names rest.akismet.com, as a re-pointed client sends it.
    request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=server.port)


class ToWinnow(httpx.HTTPTransport):
    def __init__(self, server: LiveServer):
        super().__init__()
        self.live = server

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _rewrite(self.live, request)
        return super().handle_request(request)


class AsyncToWinnow(httpx.AsyncHTTPTransport):
    def __init__(self, server: LiveServer):
        super().__init__()
        self.live = server

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _rewrite(self.live, request)
        return await super().handle_async_request(request)


@pytest.fixture(scope="module")
def r():
    client = redis.Redis.from_url(_redis_url())
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis at {_redis_url()}: start it, or unset WINNOW_TEST_REDIS_URL for a private one")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _build_app(r, tmp_path, **overrides):
    model = _model()
    values = {"redis_url": _redis_url(), "secret_key": "test-secret", "data_dir": tmp_path, **_thresholds(model)}
    settings = Settings(**{**values, **overrides})
    app = create_app(settings, redis_client=r, serving=ServingModel.fixed(model, "v-akismet-test"))
    app.config["TESTING"] = True
    return app


@pytest.fixture(scope="module")
def app(r, tmp_path_factory):
    app = _build_app(r, tmp_path_factory.mktemp("akismet"))
    yield app
    app.extensions["winnow"].writer.stop()


@pytest.fixture(scope="module")
def live(app):
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(app):
    store = app.extensions["winnow"].keys
    return {
        "site": store.create(BLOG, "site", "blog")[0],
        "other": store.create("https://elsewhere.example.org", "site", "elsewhere")[0],
        "moderator": store.create("", "moderator", "alice")[0],
    }


@pytest.fixture(scope="module")
def key(keys):
    return keys["site"]


def _http_client(live, key=None) -> httpx.Client:
    # akismet 25.10's key_sites() sends no key at all; a default api_key query parameter supplies it.
    return httpx.Client(transport=ToWinnow(live), headers={"User-Agent": akismet.USER_AGENT}, timeout=10,
                        params={"api_key": key} if key else None)


@pytest.fixture()
def client(live, key):
    with _http_client(live, key) as http:
        yield akismet.SyncClient(config=akismet.Config(key=key, url=BLOG), http_client=http)


@pytest.fixture()
def raw(live):
    """Form posts straight to the live server, the way a plugin sends them."""
    with httpx.Client(base_url=live.url, timeout=10) as http:
        yield http


def _flush(app):
    assert app.extensions["winnow"].writer.flush(5.0)


def _stored_check(app, guid):
    _flush(app)
    return app.extensions["winnow"].checks.get(guid)


# ---- the real client, sync -----------------------------------------------------------------------------------


def test_verify_key_valid_and_invalid(client, live):
    assert client.verify_key() is True
    assert client.verify_key(key="notarealkey1", url=BLOG) is False
    with _http_client(live) as http:
        with pytest.raises(akismet.APIKeyError):
            akismet.SyncClient.validated_client(config=akismet.Config(key="zzzzzzzzzzzz", url=BLOG), http_client=http)


def test_comment_check_tiers_with_a_guid_on_every_answer(client, app):
    assert client.comment_check(IP, comment_content=HAM_TEXT, comment_type="comment") == akismet.CheckResponse.HAM
    assert client.comment_check(IP, comment_content=SPAM_TEXT) == akismet.CheckResponse.SPAM
    assert client.comment_check(IP, comment_content=DISCARD_TEXT) == akismet.CheckResponse.DISCARD
    # unsure: `true` without discard by default, so the plugin files it where a moderator looks
    assert client.comment_check(IP, comment_content=UNSURE_TEXT) == akismet.CheckResponse.SPAM


def test_comment_check_is_stored_like_a_json_api_check_and_queued(raw, key, app):
    resp = raw.post("/1.1/comment-check", data={
        "api_key": key, "blog": BLOG, "user_ip": IP, "comment_content": UNSURE_TEXT, "comment_author": "Dee",
        "comment_author_email": "dee@example.com", "user_agent": "Mozilla/5.0", "referrer": "https://x.example/",
        "permalink": BLOG + "/post/1", "comment_type": "reply", "blog_lang": "en_us",
        "comment_date_gmt": "2024-05-01 10:20:30", "comment_post_ID": "17"})
    guid = resp.headers["X-akismet-guid"]
    record = _stored_check(app, guid)
    assert record is not None and record.source == "akismet" and record.site == BLOG
    assert record.verdict == "unsure" and record.queued and not record.is_test
    c = record.comment
    assert (c.content, c.author, c.author_email, c.user_ip, c.user_agent) == (
        UNSURE_TEXT, "Dee", "dee@example.com", IP, "Mozilla/5.0")
    assert (c.referrer, c.permalink, c.comment_type, c.language) == (
        "https://x.example/", BLOG + "/post/1", "reply", "en_us")
    assert c.created_at == "2024-05-01T10:20:30+00:00"
    assert dict(record.refs)["comment_post_ID"] == "17"
    queued, _ = app.extensions["winnow"].checks.queue(site=BLOG)
    assert guid in {q.id for q in queued}


def test_check_for_spam_rechecks_leave_one_queue_entry_per_comment(raw, key, app):
    # The plugin's "Check for Spam" button sends every pending comment again, with its comment_ID and a
    # recheck_reason: each click must not add the pending queue to the moderators' queue once more.
    form = {"api_key": key, "blog": BLOG, "user_ip": IP, "comment_content": UNSURE_TEXT, "comment_author": "Dee",
            "comment_author_email": "dee@example.com", "comment_post_ID": "17"}
    first = raw.post("/1.1/comment-check", data=form).headers["X-akismet-guid"]
    _flush(app)
    again = [raw.post("/1.1/comment-check", data={**form, "comment_ID": "99", "recheck_reason": "recheck_queue"}
                      ).headers["X-akismet-guid"] for _ in range(2)]
    _flush(app)
    checks = app.extensions["winnow"].checks
    assert {q.id for q in checks.queue(site=BLOG, limit=500)[0]} & {first, *again} == {again[-1]}
    # A report by the first guid labels that check and settles the comment: the newest leaves the queue too.
    assert raw.post("/1.1/submit-spam", data={**form, "guid": first}).content == face.THANKS.encode()
    assert _stored_check(app, first) is not None
    assert not {q.id for q in checks.queue(site=BLOG, limit=500)[0]} & {first, *again}
    # Reported, the comment is settled: the next "Check for Spam" click does not queue it again.
    later = raw.post("/1.1/comment-check", data={**form, "comment_ID": "99", "recheck_reason": "recheck_queue"}
                     ).headers["X-akismet-guid"]
    _flush(app)
    assert _stored_check(app, later) is not None
    assert not {q.id for q in checks.queue(site=BLOG, limit=500)[0]} & {first, *again, later}


def test_answers_are_exact_text_and_debug_help_only_on_invalid(raw, key):
    ok = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                              "comment_content": HAM_TEXT})
    assert ok.status_code == 200 and ok.content == b"false"
    assert ok.headers["Content-Type"].startswith("text/plain")
    assert "X-akismet-debug-help" not in ok.headers and "X-akismet-pro-tip" not in ok.headers
    valid = raw.post("/1.1/verify-key", data={"key": key, "blog": BLOG})
    assert valid.content == b"valid" and "X-akismet-debug-help" not in valid.headers
    bad = raw.post("/1.1/comment-check", data={"api_key": "abcdefabcdef", "blog": BLOG, "user_ip": IP})
    assert (bad.status_code, bad.content) == (200, b"invalid")
    assert bad.headers["X-akismet-debug-help"] and "X-akismet-guid" not in bad.headers
    discard = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                   "comment_content": DISCARD_TEXT})
    assert discard.content == b"true" and discard.headers["X-akismet-pro-tip"] == "discard"


def test_test_conventions(client):
    assert client.comment_check(IP, comment_content=HAM_TEXT, comment_author="akismet-guaranteed-spam",
                                is_test=True) == akismet.CheckResponse.SPAM
    assert client.comment_check(IP, comment_content=HAM_TEXT, is_test=True,
                                comment_author_email="akismet-guaranteed-spam@example.com") == akismet.CheckResponse.SPAM
    assert client.comment_check(IP, comment_content=DISCARD_TEXT, user_role="administrator",
                                is_test=True) == akismet.CheckResponse.HAM


def test_bad_key_raises_in_the_client(live):
    with _http_client(live) as http:
        bad = akismet.SyncClient(config=akismet.Config(key="abcdefabcdef", url=BLOG), http_client=http)
        with pytest.raises(akismet.APIKeyError):
            bad.comment_check(IP, comment_content=HAM_TEXT)
        with pytest.raises(akismet.APIKeyError):
            bad.submit_spam(IP, comment_content=HAM_TEXT)


def test_moderator_tokens_are_not_akismet_keys(raw, keys):
    resp = raw.post("/1.1/verify-key", data={"key": keys["moderator"], "blog": BLOG})
    assert resp.content == b"invalid" and "site keys" in resp.headers["X-akismet-debug-help"]


# ---- submissions become moderator labels ---------------------------------------------------------------------


def test_submit_spam_with_guid_labels_the_original_check(raw, client, key, app):
    check = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                 "comment_content": HAM_TEXT + " (missed)"})
    guid = check.headers["X-akismet-guid"]
    assert check.content == b"false"
    resp = raw.post("/1.1/submit-spam", data={
        "api_key": key, "blog": BLOG, "user_ip": IP, "comment_content": HAM_TEXT + " (missed)", "guid": guid,
        "reporter": "editor-jo", "comment_check_response": "false"})
    assert (resp.status_code, resp.content) == (200, face.THANKS.encode())
    labels = app.extensions["winnow"].labels
    label = labels.get(guid)
    assert label is not None and label.label == "spam" and label.site == BLOG
    assert "editor-jo" in labels.audit(guid)[-1]["by"]
    # and it has left the moderation queue
    queued, _ = app.extensions["winnow"].checks.queue(site=BLOG)
    assert guid not in {q.id for q in queued}
    # The Python client sends no guid: a report with the fields comment-check was sent is about the same check,
    # relabelled (not joined by a second, contradicting label of the same comment).
    before = labels.count(BLOG)
    assert client.submit_ham(IP, comment_content=HAM_TEXT + " (missed)") is True
    assert labels.get(guid).label == "ham" and labels.count(BLOG) == before


def test_a_report_without_guid_labels_the_check_of_the_same_comment(client, app):
    """The Python `akismet` client refuses a guid argument: its reports name the comment by its fields only. When
    they are those comment-check was sent, the report labels that check, which leaves the moderators' queue."""
    fields = dict(comment_content="Is the 2.4 release compatible with older plugins?", comment_author="Lu",
                  comment_author_email="lu@example.com", permalink=BLOG + "/post/9")
    svc = app.extensions["winnow"]
    labels_before = svc.labels.count(BLOG)
    assert client.comment_check(IP, **fields) in (akismet.CheckResponse.HAM, akismet.CheckResponse.SPAM)
    assert client.submit_spam(IP, **fields) is True  # at once: the check may still wait in the write buffer
    _flush(app)
    [label] = [x for x in svc.labels.export(site=BLOG) if x.comment.content == fields["comment_content"]]
    assert label.label == "spam" and label.check_id and label.id == label.check_id
    check = svc.checks.get(label.check_id)
    assert check is not None and check.comment.content == fields["comment_content"]
    assert svc.labels.count(BLOG) == labels_before + 1
    assert check.id not in {q.id for q in svc.checks.queue(site=BLOG, limit=500)[0]}
    # Checked again ("Check for Spam"), then reported again without a guid: the label it has changes.
    assert client.comment_check(IP, **fields) in (akismet.CheckResponse.HAM, akismet.CheckResponse.SPAM)
    assert client.submit_ham(IP, **fields) is True
    _flush(app)
    assert svc.labels.count(BLOG) == labels_before + 1 and svc.labels.get(check.id).label == "ham"
    assert not [q for q in svc.checks.queue(site=BLOG, limit=500)[0] if q.comment.content == fields["comment_content"]]
    assert client.submit_spam(IP, **fields) is True
    # Other fields (another author) make another comment: a label of its own, given with its content.
    assert client.submit_spam(IP, **{**fields, "comment_author": "Someone else"}) is True
    assert svc.labels.count(BLOG) == labels_before + 2 and svc.labels.get(check.id).label == "spam"


def test_a_submission_by_guid_after_the_check_expired_changes_the_label_it_gave(raw, key, app, r):
    form = {"api_key": key, "blog": BLOG, "user_ip": IP, "comment_content": HAM_TEXT + " (kept a month)"}
    guid = raw.post("/1.1/comment-check", data=form).headers["X-akismet-guid"]
    _flush(app)
    assert raw.post("/1.1/submit-spam", data={**form, "guid": guid}).content == face.THANKS.encode()
    r.delete(rediskeys.CHECK.format(id=guid))  # the check passes its retention; its label is kept
    labels = app.extensions["winnow"].labels
    before = labels.count(BLOG)
    assert raw.post("/1.1/submit-ham", data={**form, "guid": guid, "reporter": "editor-jo"}).content == \
        face.THANKS.encode()
    assert labels.count(BLOG) == before  # changed, not joined by a second, contradicting label
    assert labels.get(guid).label == "ham"
    audit = labels.audit(guid)
    assert [(e["from"], e["to"]) for e in audit] == [(None, "spam"), ("spam", "ham")]
    assert "editor-jo" in audit[-1]["by"] and audit[-1]["source"] == "akismet"


def test_submit_ham_without_guid_labels_a_new_comment(client, app):
    labels = app.extensions["winnow"].labels
    before = labels.count(BLOG)
    assert client.submit_ham(IP, comment_content="A perfectly fine remark about backups.",
                             comment_author="Sam") is True
    assert labels.count(BLOG) == before + 1
    items, _ = labels.list(site=BLOG)
    assert any(x.comment.content == "A perfectly fine remark about backups." and x.label == "ham" for x in items)


def test_a_submission_with_nothing_to_learn_from_is_refused(raw, key, app):
    labels = app.extensions["winnow"].labels
    before = labels.count(BLOG)
    for guid in ("", "0123456789abcdef01234567"):  # no check named, or one this deployment never made
        resp = raw.post("/1.1/submit-spam", data={"api_key": key, "blog": BLOG, "user_ip": IP, "guid": guid})
        assert resp.status_code == 400 and resp.content.startswith(b"Missing required field: comment_content.")
        assert (b"guid names no check" in resp.content) == bool(guid)
    assert labels.count(BLOG) == before


def test_is_test_is_never_trained_on(raw, client, key, app):
    labels = app.extensions["winnow"].labels
    before = labels.count(BLOG)
    check = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP, "is_test": "1",
                                                 "comment_content": SPAM_TEXT + " (test)"})
    guid = check.headers["X-akismet-guid"]
    record = _stored_check(app, guid)
    assert record.is_test and not record.queued
    done = raw.post("/1.1/submit-ham", data={"api_key": key, "blog": BLOG, "user_ip": IP, "guid": guid,
                                             "comment_content": SPAM_TEXT + " (test)"})
    assert done.content == face.THANKS.encode()
    assert client.submit_spam(IP, comment_content="test only", is_test=True) is True
    assert labels.get(guid) is None and labels.count(BLOG) == before
    # a test submission about a real check does not label it either
    real = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                "comment_content": SPAM_TEXT + " (real)"}).headers["X-akismet-guid"]
    raw.post("/1.1/submit-ham", data={"api_key": key, "blog": BLOG, "user_ip": IP, "guid": real, "is_test": "true"})
    assert labels.get(real) is None and _stored_check(app, real).queued


def test_a_submission_about_a_test_check_is_no_mistake_in_key_sites(raw, app):
    key, record = app.extensions["winnow"].keys.create("https://tests.example.com", "site", "tests")
    form = {"api_key": key, "blog": "https://tests.example.com", "user_ip": IP}
    guid = raw.post("/1.1/comment-check", data={**form, "comment_content": HAM_TEXT, "is_test": "1"}
                    ).headers["X-akismet-guid"]
    _flush(app)
    assert raw.post("/1.1/submit-spam", data={**form, "guid": guid}).content == face.THANKS.encode()
    [row] = app.extensions[face.USAGE_EXTENSION].sites(record.id, face.month_of())
    assert (row["missed_spam"], row["false_positives"]) == (0, 0)


# ---- usage and key-sites -------------------------------------------------------------------------------------


def test_a_submission_by_guid_is_a_mistake_only_against_what_comment_check_answered(raw, app):
    key, record = app.extensions["winnow"].keys.create("https://answers.example.com", "site", "answers")
    form = {"api_key": key, "blog": "https://answers.example.com", "user_ip": IP}

    def check(**fields) -> tuple[bytes, str]:
        resp = raw.post("/1.1/comment-check", data={**form, **fields})
        return resp.content, resp.headers["X-akismet-guid"]

    unsure = check(comment_content=UNSURE_TEXT)  # unsure: answered `true` (spam) by default
    guaranteed = check(comment_content=HAM_TEXT, comment_author="akismet-guaranteed-spam")
    spam = check(comment_content=SPAM_TEXT)
    ham = check(comment_content=HAM_TEXT + " (kept)")
    assert [unsure[0], guaranteed[0], spam[0], ham[0]] == [b"true", b"true", b"true", b"false"]
    _flush(app)
    for (_, guid), endpoint in ((unsure, "submit-ham"), (guaranteed, "submit-ham"), (spam, "submit-spam"),
                                (ham, "submit-ham")):
        assert raw.post(f"/1.1/{endpoint}", data={**form, "guid": guid}).content == face.THANKS.encode()
    [row] = app.extensions[face.USAGE_EXTENSION].sites(record.id, face.month_of())
    # The unsure `true` corrected to ham was a false positive; agreeing submissions are no mistake, and the
    # guaranteed-spam author is a test convention (a test check: answered, never queued, no mistake to count).
    assert (row["false_positives"], row["missed_spam"]) == (1, 0)
    stored = {name: _stored_check(app, guid) for name, (_, guid) in
              (("unsure", unsure), ("guaranteed", guaranteed), ("spam", spam), ("ham", ham))}
    assert stored["guaranteed"].is_test and not stored["guaranteed"].queued
    assert app.extensions["winnow"].labels.get(guaranteed[1]) is None
    # What each check stored as `answered` is what the client was told: spam for `true`, ham for `false`.
    assert {name: c.answered for name, c in stored.items()} == {
        "unsure": "spam", "guaranteed": "spam", "spam": "spam", "ham": "ham"}
    assert stored["unsure"].verdict == "unsure"  # the model's own verdict is kept beside it


def test_usage_limit_and_key_sites_count_per_site(app, live):
    store = app.extensions["winnow"].keys
    key = store.create("https://stats.example.com", "site", "stats")[0]
    with _http_client(live, key) as http:
        first = akismet.SyncClient(config=akismet.Config(key=key, url=BLOG), http_client=http)
        second = akismet.SyncClient(config=akismet.Config(key=key, url=OTHER_BLOG), http_client=http)
        for text in (HAM_TEXT, SPAM_TEXT, DISCARD_TEXT):
            first.comment_check(IP, comment_content=text)
        second.comment_check(IP, comment_content=HAM_TEXT)
        first.submit_spam(IP, comment_content="missed one")
        second.submit_ham(IP, comment_content="wrongly caught")

        usage = first.usage_limit()
        assert usage == {"limit": "none", "usage": 4, "percentage": "0.00", "throttled": False}

        sites = first.key_sites()
        month = face.month_of()
        assert (sites["total"], sites["offset"], sites["limit"]) == (2, 0, 500)
        rows = {row["site"]: row for row in sites[month]}
        assert rows["blog.example.com"] == {"site": "blog.example.com", "api_calls": 3, "spam": 2, "ham": 1,
                                            "missed_spam": 1, "false_positives": 0, "is_revoked": False}
        assert rows["shop.example.com"] == {"site": "shop.example.com", "api_calls": 1, "spam": 0, "ham": 1,
                                            "missed_spam": 0, "false_positives": 1, "is_revoked": False}
        assert [r["site"] for r in sites[month]] == ["blog.example.com", "shop.example.com"]  # by total calls

        csv_text = first.key_sites(result_format="csv", order="false_positives", url_filter="shop")
        lines = csv_text.split("\n")
        assert lines[0].startswith("Active sites for ") and f"during {month}" in lines[0] and "total: 1" in lines[0]
        assert lines[1] == "Site,Total API Calls,Spam,Ham,Missed Spam,False Positives,Is Revoked"
        assert lines[2:] == ["shop.example.com,1,0,1,0,1,false"]
        assert not csv_text.endswith("\n")

        assert first.key_sites(month="2001-01") == {"2001-01": [], "limit": 500, "offset": 0, "total": 0}
        assert first.key_sites(limit=1, offset=1)[month][0]["site"] == "shop.example.com"


def test_key_sites_refuses_bad_arguments_and_bad_keys(raw, key):
    assert raw.get("/1.2/key-sites", params={"api_key": key, "month": "2024-13"}).status_code == 400
    assert raw.get("/1.2/key-sites", params={"api_key": key, "format": "xml"}).status_code == 400
    for limit in ("ten", "²", "9" * 5000):
        refused = raw.get("/1.2/key-sites", params={"api_key": key, "limit": limit})
        assert refused.status_code == 400 and refused.content == b"Invalid limit: use a whole number."
    bad = raw.get("/1.2/key-sites", params={"api_key": "abcdefabcdef"})
    assert bad.content == b"invalid" and bad.headers["X-akismet-debug-help"]
    assert raw.post("/1.2/usage-limit", data={"api_key": "abcdefabcdef"}).content == b"invalid"


@pytest.mark.parametrize("blog", ["http://[x", "http://a.example.com:abc", "a.example.com:99999", "//["])
def test_a_blog_that_is_no_url_is_counted_as_sent_not_a_500(app, raw, blog):
    key, record = app.extensions["winnow"].keys.create("https://odd-blogs.example.org", "site", "odd blogs")
    form = {"api_key": key, "blog": blog, "user_ip": IP}
    checked = raw.post("/1.1/comment-check", data={**form, "comment_content": HAM_TEXT})
    assert checked.status_code == 200 and checked.content in (b"true", b"false") and checked.headers["X-akismet-guid"]
    submitted = raw.post("/1.1/submit-ham", data={**form, "comment_content": HAM_TEXT + " (submitted)"})
    assert (submitted.status_code, submitted.content) == (200, face.THANKS.encode())
    sites = {row["site"] for row in app.extensions[face.USAGE_EXTENSION].sites(record.id, face.month_of())}
    assert blog.lower() in sites


def test_usage_counters_are_written_in_one_hash_per_key_and_month(app, r, keys, raw):
    raw.post("/1.1/comment-check", data={"api_key": keys["other"], "blog": "other.example.net", "user_ip": IP,
                                         "comment_content": HAM_TEXT})
    app.extensions[face.USAGE_EXTENSION].flush()
    record = app.extensions["winnow"].keys.authenticate(keys["other"])
    h = r.hgetall(rediskeys.AKISMET_USAGE.format(key_id=record.id, month=face.month_of()))
    assert h == {b"api_calls:other.example.net": b"1", b"ham:other.example.net": b"1"}
    assert 0 < r.ttl(rediskeys.AKISMET_USAGE.format(key_id=record.id, month=face.month_of())) <= face.STATS_TTL_SECONDS


# ---- the real client, async -----------------------------------------------------------------------------------


def test_async_client_end_to_end(live, key):
    async def run():
        async with httpx.AsyncClient(transport=AsyncToWinnow(live), timeout=10, params={"api_key": key},
                                     headers={"User-Agent": akismet.USER_AGENT}) as http:
            client = await akismet.AsyncClient.validated_client(config=akismet.Config(key=key, url=BLOG),
                                                                http_client=http)
            out = [
                await client.comment_check(IP, comment_content=HAM_TEXT),
                await client.comment_check(IP, comment_content=SPAM_TEXT),
                await client.comment_check(IP, comment_content=DISCARD_TEXT),
                await client.submit_spam(IP, comment_content="async missed spam"),
                await client.submit_ham(IP, comment_content="async false positive"),
                await client.verify_key(key="notarealkey1", url=BLOG),
                (await client.usage_limit())["limit"],
                sorted((await client.key_sites())),
            ]
            return out

    # A thread of its own: asyncio.run() refuses to start inside another library's running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        out = pool.submit(asyncio.run, run()).result()
    assert out[:3] == [akismet.CheckResponse.HAM, akismet.CheckResponse.SPAM, akismet.CheckResponse.DISCARD]
    assert out[3:6] == [True, True, False]
    assert out[6] == "none" and out[7] == sorted([face.month_of(), "limit", "offset", "total"])


# ---- what a WordPress site sends --------------------------------------------------------------------------------


def _wordpress_body(key: str | None, content: str, charset: str = "UTF-8", **extra) -> bytes:
    fields = [
        ("comment_post_ID", "42"), ("comment_author", "Jürgen"), ("comment_author_email", "j@example.de"),
        ("comment_author_url", ""), ("comment_content", content), ("comment_type", "comment"),
        ("comment_parent", "0"), ("user_ID", "0"), ("user_ip", IP), ("user_agent", "Mozilla/5.0 (X11)"),
        ("referrer", BLOG + "/2024/05/hello/"), ("blog", BLOG), ("blog_lang", "de_DE"), ("blog_charset", charset),
        ("permalink", BLOG + "/2024/05/hello/"), ("akismet_comment_nonce", "passed"),
        ("comment_post_modified_gmt", "2024-05-01 09:00:00"),
        ("comment_context[0]", "Backups"), ("comment_context[1]", "Linux"),
        ("callback", BLOG + "/wp-json/akismet/v1/webhook"),
        ("POST_comment", content), ("POST_submit", "Post Comment"), ("POST_comment_post_ID", "42"),
        ("POST_ak_js", "1714550000000"), ("POST_ak_hp_textarea", ""),
        ("HTTP_HOST", "blog.example.com"), ("HTTP_USER_AGENT", "Mozilla/5.0 (X11)"),
        ("HTTP_ACCEPT", "text/html,application/xhtml+xml"), ("HTTP_ACCEPT_LANGUAGE", "de-DE,de;q=0.9"),
        ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br"), ("HTTP_REFERER", BLOG + "/2024/05/hello/"),
        ("HTTP_CONTENT_TYPE", "application/x-www-form-urlencoded"), ("HTTP_X_FORWARDED_FOR", IP),
        ("REMOTE_ADDR", IP), ("REQUEST_URI", "/wp-comments-post.php"),
    ]
    fields += list(extra.items())
    if key:
        fields.append(("api_key", key))
    return urllib.parse.urlencode(fields, encoding=charset).encode("ascii")


def test_wordpress_shaped_posts_pass(raw, key, app):
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
               "User-Agent": "WordPress/6.5 | Akismet/5.3", "Host": "rest.akismet.com"}
    ham = raw.post("/1.1/comment-check", content=_wordpress_body(key, HAM_TEXT + " Grüße!"), headers=headers)
    assert (ham.status_code, ham.content) == (200, b"false")
    record = _stored_check(app, ham.headers["X-akismet-guid"])
    assert record.comment.author == "Jürgen" and record.comment.content.endswith("Grüße!")
    assert record.comment.language == "de_DE" and record.comment.honeypot is False
    assert dict(record.refs)["comment_context"] == "Backups, Linux" and dict(record.refs)["comment_post_ID"] == "42"
    spam = raw.post("/1.1/comment-check", content=_wordpress_body(key, DISCARD_TEXT), headers=headers)
    assert spam.content == b"true" and spam.headers["X-akismet-pro-tip"] == "discard"


def test_wordpress_charset_and_legacy_key_host(raw, key, app):
    # An ISO-8859-1 blog, and an older plugin that names the key only in the Host header.
    body = _wordpress_body(None, HAM_TEXT + " Grüße", charset="ISO-8859-1")
    resp = raw.post("/1.1/comment-check", content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=ISO-8859-1", "Host": f"{key}.rest.akismet.com"})
    assert resp.content == b"false"
    record = _stored_check(app, resp.headers["X-akismet-guid"])
    assert record.comment.author == "Jürgen" and record.comment.content.endswith("Grüße")


@pytest.mark.parametrize("host", ["{key}.localhost:8000", "{key}.winnow", "{key}.winnow.example.com"])
def test_a_key_in_the_host_under_any_host_name(raw, key, host):
    # akismet-api (npm) sends comment-check to `{key}.{host}` and never sends api_key: `host: "localhost:8000"`
    # must work as well as a dotted name.
    resp = raw.post("/1.1/comment-check", data={"blog": BLOG, "user_ip": IP, "comment_content": HAM_TEXT},
                    headers={"Host": host.format(key=key)})
    assert resp.content == b"false"


def test_an_empty_key_is_named_as_the_endpoint_names_it(raw):
    verify = raw.post("/1.1/verify-key", data={"blog": BLOG})
    check = raw.post("/1.1/comment-check", data={"blog": BLOG, "user_ip": IP})
    assert verify.headers["X-akismet-debug-help"].startswith('Empty "key" value')
    assert check.headers["X-akismet-debug-help"].startswith('Empty "api_key" value')


def test_a_body_without_a_charset_header_is_read_in_its_blog_charset(raw, key, app):
    body = _wordpress_body(key, HAM_TEXT + " Grüße aus Köln", charset="ISO-8859-1")
    resp = raw.post("/1.1/comment-check", content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    record = _stored_check(app, resp.headers["X-akismet-guid"])
    assert record.comment.author == "Jürgen" and record.comment.content.endswith("Grüße aus Köln")


@pytest.mark.parametrize("roles,answer", [
    ("bbp_participant,editor", b"false"),   # a trusted role of the site, wherever it is in the list
    ("subscriber, Administrator", b"false"),  # the protocol's own rule
    ("subscriber,bbp_participant", b"true"),
])
def test_any_of_several_wordpress_roles_can_make_the_author_trusted(raw, key, app, roles, answer):
    resp = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                "comment_content": SPAM_TEXT, "user_role": roles})
    assert resp.content == answer
    record = _stored_check(app, resp.headers["X-akismet-guid"])
    assert record.comment.user_role == ",".join(x.strip().lower() for x in roles.split(","))
    assert record.trusted == (answer == b"false")


def test_a_filled_honeypot_field_is_spam(raw, key, app):
    form = {"api_key": key, "blog": BLOG, "user_ip": IP, "comment_content": HAM_TEXT,
            "honeypot_field_name": "hidden_website"}
    empty = raw.post("/1.1/comment-check", data={**form, "hidden_website": ""})
    assert empty.content == b"false"
    resp = raw.post("/1.1/comment-check", data={**form, "hidden_website": "http://bot.example"})
    assert resp.content == b"true" and "X-akismet-pro-tip" not in resp.headers
    assert _stored_check(app, resp.headers["X-akismet-guid"]).comment.honeypot is True


def test_bad_dates_and_odd_fields_are_ignored_not_errors(raw, key, app):
    resp = raw.post("/1.1/comment-check", data={
        "api_key": key, "blog": BLOG, "user_ip": f"{IP}, 10.0.0.1", "comment_content": HAM_TEXT,
        "comment_date_gmt": "yesterday-ish", "comment_author_email": "not an email", "comment_type": "x" * 300,
        "user_role": "subscriber"})
    assert resp.status_code == 200 and resp.content in (b"true", b"false")
    c = _stored_check(app, resp.headers["X-akismet-guid"]).comment
    assert (c.created_at, c.author_email, c.user_ip, c.user_role) == ("", "", IP, "subscriber")


# ---- the protocol's answers to bad requests: never a 500 -------------------------------------------------------


def test_missing_required_fields(raw, key, live):
    no_blog = raw.post("/1.1/comment-check", data={"api_key": key, "user_ip": IP, "comment_content": "x"})
    assert (no_blog.status_code, no_blog.content) == (400, b"Missing required field: blog.")
    assert no_blog.headers["Content-Type"].startswith("text/plain")
    assert "X-akismet-debug-help" not in no_blog.headers
    no_ip = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "comment_content": "x"})
    assert (no_ip.status_code, no_ip.content) == (400, b"Missing required field: user_ip.")
    assert raw.post("/1.1/submit-spam", data={"api_key": key, "blog": BLOG}).status_code == 400
    assert raw.post("/1.1/verify-key", data={"key": key}).content == b"Missing required field: blog."
    with _http_client(live) as http:
        client = akismet.SyncClient(config=akismet.Config(key=key, url=""), http_client=http)
        with pytest.raises(akismet.RequestError):
            client.comment_check(IP, comment_content=HAM_TEXT)


JUNK = [
    b"",
    b"\x00\xff\xfe\x80garbage",
    b"%%%%&&&===%zz%e9%",
    b'{"api_key": "x", "blog": "y"}',
    b"a=" + b"%C3" * 1000,
    b"&".join(b"k%d=v" % i for i in range(3000)),
]


@pytest.mark.parametrize("body", JUNK)
@pytest.mark.parametrize("path", ["/1.1/comment-check", "/1.1/verify-key", "/1.1/submit-ham", "/1.2/key-sites"])
def test_junk_bodies_get_protocol_answers(raw, path, body):
    resp = raw.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code < 500
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.content in (b"invalid", b"Too many fields.")


def test_junk_with_a_valid_key_is_a_missing_field_not_a_crash(raw, key):
    for body in (b"api_key=" + key.encode() + b"&\xff\xfe=\x00\x01&blog", b"api_key=" + key.encode()):
        resp = raw.post("/1.1/comment-check", content=body, headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=no-such-charset"})
        assert resp.status_code == 400 and resp.content.startswith(b"Missing required field: ")
    multipart = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                     "comment_content": HAM_TEXT}, files={"f": b"x"})
    assert multipart.content == b"false"


def test_multipart_bodies_have_the_limits_of_urlencoded_ones(raw, key):
    """A big multipart field (under the 1 MiB body limit) is read, not taken for a missing key."""
    fields = {"api_key": key, "blog": BLOG, "user_ip": IP, "comment_content": HAM_TEXT}
    big = raw.post("/1.1/comment-check", data={**fields, "POST_extra": "x" * 600_000}, files={"f": b"x"})
    assert big.status_code == 200 and big.content == b"false"
    many = raw.post("/1.1/comment-check", data={**fields, **{f"k{i}": "v" for i in range(2500)}},
                    files={"f": b"x"})
    assert many.status_code == 400 and many.content == b"Too many fields."


def test_oversized_and_wrong_method_are_text_answers(raw, key):
    big = raw.post("/1.1/comment-check", content=b"a=" + b"x" * (2 * 1024 * 1024),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and big.headers["Content-Type"].startswith("text/plain")
    get = raw.get("/1.1/comment-check", params={"api_key": key})
    assert get.status_code == 405 and get.headers["Content-Type"].startswith("text/plain")
    huge_content = raw.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                        "comment_content": "é" * 40_000})
    assert huge_content.status_code == 200 and huge_content.content in (b"true", b"false")


def test_wordpress_admin_page_calls(raw, key):
    assert raw.get("/1.1/test").content == b"connected"
    sub = raw.post("/1.1/get-subscription", data={"key": key, "blog": BLOG})
    assert sub.json()["status"] == "active"
    assert raw.post("/1.1/get-subscription", data={"key": "abcdefabcdef", "blog": BLOG}).content == b"invalid"


# ---- policy: unsure answers, rate limits --------------------------------------------------------------------


def test_unsure_can_be_answered_false(r, tmp_path, key):
    app = _build_app(r, tmp_path, akismet_unsure_as_spam=False)
    try:
        web = app.test_client()
        resp = web.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                    "comment_content": UNSURE_TEXT})
        assert resp.data == b"false" and resp.headers["X-akismet-guid"]
        spam = web.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                    "comment_content": SPAM_TEXT})
        assert spam.data == b"true"
    finally:
        app.extensions["winnow"].writer.stop()


def test_rate_limited_calls_get_429_with_retry_after_per_key(r, tmp_path, keys):
    app = _build_app(r, tmp_path, rate_limit="2/minute")
    try:
        web = app.test_client()

        def call(key):
            return web.post("/1.1/comment-check", data={"api_key": key, "blog": BLOG, "user_ip": IP,
                                                        "comment_content": HAM_TEXT})

        assert [call(keys["site"]).status_code for _ in range(2)] == [200, 200]
        limited = call(keys["site"])
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert call(keys["other"]).status_code == 200  # another key has its own budget
    finally:
        app.extensions["winnow"].writer.stop()
        r.delete(*(r.keys("LIMITS*") or [b"-"]))


@pytest.mark.parametrize("path", ["/1.1/verify-key", "/1.1/get-subscription"])
def test_a_junk_key_under_the_other_name_does_not_move_a_call_off_its_budget(r, tmp_path, keys, path):
    # These two calls name their key `key`; a junk `api_key` beside it used to send the limiter to the client
    # address while the view still answered for the real key.
    app = _build_app(r, tmp_path, rate_limit="2/minute")
    try:
        web = app.test_client()
        assert [web.post(path, data={"key": keys["site"], "blog": BLOG}).status_code for _ in range(2)] == [200, 200]
        moved = web.post(path, data={"api_key": "junkjunkjunk", "key": keys["site"], "blog": BLOG})
        assert moved.status_code == 429 and moved.headers["Content-Type"].startswith("text/plain")
        # ... and a call is never charged to a key it does not authenticate with.
        other = web.post(path, data={"api_key": keys["other"], "key": "abcdefabcdef", "blog": BLOG})
        assert (other.status_code, other.data) == (200, b"invalid")
        assert [web.post(path, data={"key": keys["other"], "blog": BLOG}).status_code for _ in range(2)] == [200, 200]
    finally:
        app.extensions["winnow"].writer.stop()
        r.delete(*(r.keys("LIMITS*") or [b"-"]))


def test_unknown_endpoints_are_text_404(raw):
    resp = raw.post("/1.1/no-such-thing", data={"a": "b"})
    assert resp.status_code == 404 and resp.headers["Content-Type"].startswith("text/plain")
    put = raw.put("/1.2/key-sites")
    assert put.status_code == 405 and put.headers["Allow"] == "GET, POST"


def test_redis_outage_still_answers_known_keys_and_keeps_the_counts(tmp_path):
    from service.app import connect
    from tests.service_support import PrivateRedis

    private = PrivateRedis(tmp_path).start()
    client = connect(Settings(redis_url=private.url))
    app = _build_app(client, tmp_path, redis_url=private.url)
    usage = app.extensions[face.USAGE_EXTENSION]
    try:
        key, record = app.extensions["winnow"].keys.create(BLOG, "site", "outage")
        web = app.test_client()
        form = {"api_key": key, "blog": BLOG, "user_ip": IP, "comment_content": HAM_TEXT}
        assert web.post("/1.1/comment-check", data=form).data == b"false"
        assert usage.flush()
        hkey = rediskeys.AKISMET_USAGE.format(key_id=record.id, month=face.month_of())
        before = int(client.hget(hkey, "api_calls:blog.example.com"))
        private.stop()
        during = web.post("/1.1/comment-check", data=form)
        assert (during.status_code, during.data) == (200, b"false") and during.headers["X-akismet-guid"]
        unknown = web.post("/1.1/comment-check", data={**form, "api_key": "qqqqqqqqqqqq"})
        assert unknown.status_code == 503 and unknown.headers["Retry-After"] and unknown.headers["X-akismet-error"]
        assert unknown.headers["Content-Type"].startswith("text/plain")
        assert usage.flush() is False  # kept, not lost
        private.start()
        # the usage thread may write the kept sums first; either way, once a flush succeeds they are in Redis
        assert usage.flush() is True
        assert int(client.hget(hkey, "api_calls:blog.example.com")) == before + 1  # the call made during the outage
    finally:
        app.extensions["winnow"].writer.stop(timeout=0.5)
        private.stop()
        client.close()


# ---- per-site unsure answer, declared charsets ------------------------------------------------------------------


def test_a_site_chooses_its_own_unsure_answer(r, tmp_path):
    app = _build_app(r, tmp_path, akismet_unsure_as_spam=True)
    site = "https://unsure.example.net"
    try:
        store = app.extensions["winnow"].keys
        site_key = store.create(site, "site", "unsure blog")[0]
        admin = {"Authorization": f"Bearer {store.create('', 'admin', 'root')[0]}"}
        web = app.test_client()
        settings_url = "/api/v1/sites/unsure.example.net/settings"

        def unsure_answer():
            resp = web.post("/1.1/comment-check", data={"api_key": site_key, "blog": site, "user_ip": IP,
                                                        "comment_content": UNSURE_TEXT})
            assert resp.status_code == 200 and resp.headers["X-akismet-guid"]
            return resp.data

        assert web.get(settings_url, headers=admin).get_json()["unsure_as_spam"] is None
        assert unsure_answer() == b"true"  # the deployment's default
        changed = web.put(settings_url, json={"unsure_as_spam": False}, headers=admin)
        assert changed.status_code == 200, changed.get_data(as_text=True)
        assert changed.get_json()["unsure_as_spam"] is False and "unsure_as_spam" in changed.get_json()["overridden"]
        assert web.get(settings_url, headers=admin).get_json()["unsure_as_spam"] is False
        assert unsure_answer() == b"false"
        spam = web.post("/1.1/comment-check", data={"api_key": site_key, "blog": site, "user_ip": IP,
                                                    "comment_content": SPAM_TEXT})
        assert spam.data == b"true"  # only the unsure answer changed
        bad = web.put(settings_url, json={"unsure_as_spam": "no"}, headers=admin)
        assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "unsure_as_spam"
        reset = web.put(settings_url, json={"unsure_as_spam": None}, headers=admin).get_json()
        assert reset["unsure_as_spam"] is None and "unsure_as_spam" not in reset["overridden"]
        assert unsure_answer() == b"true"
    finally:
        app.extensions["winnow"].writer.stop()


@pytest.mark.parametrize("charset", ["rot13", "idna", "undefined", "base64", "utf-16", "utf-7", "punycode",
                                     "unicode_escape", "raw_unicode_escape"])
def test_charsets_that_are_not_text_encodings_fall_back_to_utf8(raw, key, app, charset):
    content = HAM_TEXT + " Grüße \\u0041"
    body = urllib.parse.urlencode({"api_key": key, "blog": BLOG, "user_ip": IP, "comment_content": content,
                                   "comment_author": "Jürgen"}).encode("ascii")
    resp = raw.post("/1.1/comment-check", content=body,
                    headers={"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"})
    assert (resp.status_code, resp.content) == (200, b"false"), resp.headers.get("X-akismet-debug-help")
    record = _stored_check(app, resp.headers["X-akismet-guid"])
    assert record.comment.content == content and record.comment.author == "Jürgen"
