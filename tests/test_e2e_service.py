"""The service as deployed: gunicorn (2 workers) as a subprocess on a private Redis with AOF, driven over HTTP.

Check -> queue -> label -> export, isolation between two sites, the input limits, and Redis going away and coming
back while gunicorn keeps running.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.service_support import HAM, SPAM, PrivateRedis, free_port, small_model
from training.apikeys import KeyStore
from training.checks import CheckStore
from training.registry import Registry
from training.settings import Settings
from training.sites import SiteStore

ROOT = Path(__file__).resolve().parent.parent
SITE_A = "https://a.example.com"
SITE_B = "https://b.example.org"
SITE_SHADOW = "https://shadow.example.net"
SECRET = "e2e-secret"


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-service")
    (tmp / "redis").mkdir()
    server = PrivateRedis(tmp / "redis").start()
    client = redis.Redis.from_url(server.url)
    settings = Settings(redis_url=server.url, secret_key=SECRET, data_dir=tmp)
    Registry.from_settings(client, settings).publish(small_model(), {"kind": "test"}, promoted_by="e2e",
                                                     reason="a small model for the service test", promote=True)
    store = KeyStore(client)
    keys = {
        "a": store.create(SITE_A, "site", "site a")[0],
        "b": store.create(SITE_B, "site", "site b")[0],
        "mod": store.create("", "moderator", "alice")[0],
        "mod_a": store.create(SITE_A, "moderator", "carol")[0],
        "shadow": store.create(SITE_SHADOW, "site", "a site in shadow mode")[0],
    }
    port = free_port()
    env = {**os.environ, "WINNOW_REDIS_URL": server.url, "WINNOW_SECRET_KEY": SECRET, "WINNOW_DATA_DIR": str(tmp),
           "WINNOW_RATE_LIMIT": "100000/minute", "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
           "WINNOW_BIND": f"127.0.0.1:{port}", "WINNOW_WEB_WORKERS": "2"}
    (tmp / "metrics").mkdir()
    log = open(tmp / "gunicorn.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "service/gunicorn_conf.py", "--workers", "2",
         "--bind", f"127.0.0.1:{port}", "service.app:create_app()"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            raise AssertionError("gunicorn exited:\n" + (tmp / "gunicorn.log").read_text()[-3000:])
        try:
            return httpx.post(base + "/api/v1/check", json={"content": "hello"},
                              headers={"Authorization": f"Bearer {keys['a']}"}, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(ready, 120, "gunicorn to answer checks")
        yield {"base": base, "keys": keys, "redis": server, "client": client, "log": tmp / "gunicorn.log"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def call(stack):
    def call(method, path, key=None, body=None, raw=None, params=None, fresh=False):
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {stack['keys'][key]}"
        if fresh:  # a new connection, so the request may land on either worker
            headers["Connection"] = "close"
        content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        return httpx.request(method, stack["base"] + path, headers=headers, content=content, params=params,
                             timeout=10)
    call.base = stack["base"]
    return call


def _queued(call, key, check_id, **params):
    items = call("GET", "/api/v1/queue", key, params=params).json()["items"]
    return check_id in [i["id"] for i in items]


def test_check_queue_label_export(call):
    spam = call("POST", "/api/v1/check", "a", {"content": SPAM[0], "author": "Spammy"}).json()
    ham = call("POST", "/api/v1/check", "a", {"content": HAM[0]}).json()
    assert spam["verdict"] in ("spam", "unsure") and ham["verdict"] == "ham" and spam["model_version"]
    _wait(lambda: _queued(call, "mod", spam["id"]), 30, "the check in the queue")
    items = call("GET", "/api/v1/queue", "mod").json()["items"]
    scores = [abs(i["score"] - 0.5) for i in items]
    assert scores == sorted(scores)
    first = call("POST", f"/api/v1/comments/{spam['id']}/label", "mod", {"label": "spam"})
    assert first.status_code == 200 and first.json()["previous"] is None
    again = call("POST", f"/api/v1/comments/{spam['id']}/label", "mod_a", {"label": "ham"}).json()
    assert again["previous"] == "spam"
    assert not _queued(call, "mod", spam["id"])
    detail = call("GET", f"/api/v1/labels/{spam['id']}", "mod").json()
    assert [(a["from"], a["to"]) for a in detail["audit"]] == [(None, "spam"), ("spam", "ham")]
    export = call("GET", "/api/v1/labels/export", "mod")
    rows = [json.loads(line) for line in export.text.splitlines()]
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert any(r["id"] == spam["id"] and r["label"] == "ham" and r["comment"]["content"] == SPAM[0] for r in rows)
    batch = call("POST", "/api/v1/labels", "mod", {"site": SITE_B, "items": [{"content": HAM[1], "label": "ham"}]})
    assert batch.status_code == 201


def test_sites_are_isolated(call):
    a = call("POST", "/api/v1/check", "a", {"content": SPAM[1]}).json()
    b = call("POST", "/api/v1/check", "b", {"content": SPAM[2]}).json()
    _wait(lambda: _queued(call, "mod", b["id"]) and _queued(call, "mod", a["id"]), 30, "both checks queued")
    assert call("POST", f"/api/v1/comments/{a['id']}/label", "b", {"label": "ham"}).status_code == 404
    assert call("GET", f"/api/v1/checks/{a['id']}", "b").status_code == 404
    assert call("POST", "/api/v1/check", "b", {"content": "x", "site": SITE_A}).status_code == 403
    assert call("GET", "/api/v1/queue", "b").status_code == 403
    assert call("GET", "/api/v1/labels", "b").status_code == 403
    scoped = call("GET", "/api/v1/queue", "mod_a").json()["items"]
    assert a["id"] in [i["id"] for i in scoped] and {i["site"] for i in scoped} == {SITE_A}
    assert {r["site"] for r in call("GET", "/api/v1/labels", "mod_a").json()["items"]} <= {SITE_A}
    assert call("POST", f"/api/v1/comments/{a['id']}/label", "a", {"label": "spam"}).status_code == 200
    no_key = call("POST", "/api/v1/check", None, {"content": "x"})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "unauthorized"


def test_limits_answer_4xx_with_named_fields(call):
    big = call("POST", "/api/v1/check", "a", {"content": "x" * (64 * 1024 + 1)})
    assert big.status_code == 413 and big.json()["error"]["field"] == "content"
    huge = call("POST", "/api/v1/check", "a", raw=b'{"content": "' + b"x" * (1024 * 1024 + 10) + b'"}')
    assert huge.status_code == 413 and huge.json()["error"]["field"] == "body"
    # Sent chunked, without a length: the whole body counts, not the first megabyte of it.
    chunks = [b'{"content": "', *[b"x" * 65536] * 20, b'"}']
    huge_chunked = call("POST", "/api/v1/check", "a", raw=iter(chunks))
    assert huge_chunked.status_code == 413 and huge_chunked.json()["error"]["field"] == "body"
    small_chunked = call("POST", "/api/v1/check", "a", raw=iter([b'{"content": "thanks, ', b'this helped"}']))
    assert small_chunked.status_code == 200 and small_chunked.json()["verdict"] in ("ham", "unsure", "spam")
    akismet_chunked = httpx.post(call.base + "/1.1/comment-check", headers={
        "Content-Type": "application/x-www-form-urlencoded"}, content=iter([b"blog=x&comment_content="] + chunks))
    assert akismet_chunked.status_code == 413 and akismet_chunked.headers["Content-Type"].startswith("text/plain")
    broken = call("POST", "/api/v1/check", "a", raw=b'{"content": ')
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "bad_json"
    latin = call("POST", "/api/v1/check", "a", raw=b'{"content": "\xff\xfe"}')
    assert latin.status_code == 400 and latin.json()["error"]["code"] == "bad_encoding"
    batch = call("POST", "/api/v1/check/batch", "a", {"comments": [{"content": "ok"}, {"content": None}]})
    assert batch.status_code == 400 and batch.json()["error"]["fields"][0]["field"] == "comments[1].content"


def test_redis_down_scoring_continues_labels_503_then_recovers(call, stack):
    SiteStore(stack["client"], Settings()).update(SITE_SHADOW, {"shadow": True})
    for _ in range(20):
        assert call("POST", "/api/v1/check", "a", {"content": HAM[2]}, fresh=True).status_code == 200
        assert call("GET", "/api/v1/queue", "mod", params={"limit": 1}, fresh=True).status_code == 200
    time.sleep(2.5)  # every worker reads keys and site settings again within about a second of a change
    stack["redis"].stop()
    try:
        # A key no worker has been asked about yet works, and its site's shadow mode holds in every worker.
        for _ in range(6):
            shadowed = call("POST", "/api/v1/check", "shadow", {"content": SPAM[0]}, fresh=True)
            assert shadowed.status_code == 200, shadowed.text
            assert shadowed.json()["shadow"] is True and shadowed.json()["verdict"] == "ham"
        checked = []
        for text in SPAM[3:6]:
            resp = call("POST", "/api/v1/check", "a", {"content": text}, fresh=True)
            assert resp.status_code == 200, resp.text
            checked.append(resp.json()["id"])
        label = call("POST", f"/api/v1/comments/{checked[0]}/label", "mod", {"label": "spam"}, fresh=True)
        assert label.status_code == 503 and label.json()["error"]["code"] == "store_unavailable"
        new = call("POST", "/api/v1/labels", "mod", {"site": SITE_A, "items": [{"content": "y", "label": "ham"}]})
        assert new.status_code == 503 and "error" in new.json()
    finally:
        stack["redis"].start()
    # No restart: the workers reconnect and flush what they buffered — into Redis itself, not just their memory.
    store = CheckStore(stack["client"])
    _wait(lambda: all(store.get(i) is not None for i in checked), 30, "buffered checks to reach Redis")
    ok = call("POST", f"/api/v1/comments/{checked[0]}/label", "mod", {"label": "spam"})
    assert ok.status_code == 200, ok.text
    assert call("GET", f"/api/v1/labels/{checked[0]}", "mod").json()["label"] == "spam"
    assert "Traceback" not in stack["log"].read_text()
