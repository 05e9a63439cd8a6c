"""Operations: probes, metrics across gunicorn workers, the OpenAPI document, request ids and logs, rate limits."""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from flask import Flask

from service import limits, openapi
from service.app import create_app
from tests.service_support import free_port, small_model
from training.apikeys import KeyStore
from training.registry import ServingModel
from training.schema import Comment
from training.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
OPS_DB = 5
SITE = "https://ops.example.org"
SPAM = {"content": "Buy cheap pills now http://pills.example.com", "author": "x", "user_ip": "192.0.2.1"}


def ops_redis_url() -> str:
    base = os.environ.get("WINNOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    return re.sub(r"/\d+$", "", base) + f"/{OPS_DB}"


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


@pytest.fixture()
def r():
    client = redis.Redis.from_url(ops_redis_url())
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def make_app(tmp_path, url: str, *, model=True, rate_limit="600/minute", proxy_hops=0) -> Flask:
    settings = Settings.from_env({}, redis_url=url, data_dir=tmp_path, secret_key="t" * 64, rate_limit=rate_limit,
                                 proxy_hops=proxy_hops)
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
    serving = ServingModel.fixed(small_model() if model else None, "v-test")
    return create_app(settings, redis_client=client, serving=serving)


class LogLines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture()
def request_log():
    from service import logs

    handler = LogLines()
    handler.setFormatter(logs._JsonLines())
    logs.logger.addHandler(handler)
    yield handler.lines
    logs.logger.removeHandler(handler)


# ---- probes ----------------------------------------------------------------------------------------------------
def test_healthz_answers_without_redis(tmp_path):
    client = make_app(tmp_path, dead_redis_url()).test_client()
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"alive": True}
    assert client.get("/ping").data == b"pong"


def test_readyz_ready_with_redis_and_a_model(tmp_path, r):
    resp = make_app(tmp_path, ops_redis_url()).test_client().get("/readyz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["ready"] is True and body["checks"]["model"]["version"] == "v-test"


def test_readyz_says_which_check_failed(tmp_path, r):
    resp = make_app(tmp_path, dead_redis_url()).test_client().get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["ready"] is False and body["failed"] == ["redis"] and body["checks"]["model"]["ok"] is True

    resp = make_app(tmp_path, ops_redis_url(), model=False).test_client().get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["failed"] == ["model"]

    # A node that cannot load the version the registry serves (another deployment's secret, say) serves something
    # else: still ready (every node of a scikit-learn upgrade would refuse), but it says so, and the metric alerts.
    app = make_app(tmp_path, ops_redis_url())
    app.extensions["winnow"].serving.refused_current = "v7"
    client = app.test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["checks"]["model"]["warning"].startswith("cannot load model v7, which the registry serves")
    assert "winnow_model_refused 1.0" in client.get("/metrics").get_data(as_text=True)


# ---- request ids and logs --------------------------------------------------------------------------------------
def test_request_id_is_echoed_and_logged_without_content_or_key(tmp_path, r, request_log):
    app = make_app(tmp_path, ops_redis_url())
    key, record = KeyStore(r).create(SITE, "site")
    resp = app.test_client().post("/api/v1/check", json=SPAM, headers={
        "Authorization": f"Bearer {key}", "X-Request-ID": "req-42.a"})
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == "req-42.a"
    (line,) = [ln for ln in request_log if ln.get("request_id") == "req-42.a"]
    assert line["method"] == "POST" and line["path"] == "/api/v1/check" and line["route"] == "/api/v1/check"
    assert line["status"] == 200 and line["duration_ms"] >= 0 and line["key_id"] == record.id
    raw = json.dumps(request_log)
    assert key not in raw and "pills" not in raw


def test_unsafe_request_id_is_replaced_and_refusals_are_logged_too(tmp_path, r, request_log):
    client = make_app(tmp_path, ops_redis_url()).test_client()
    resp = client.post("/api/v1/check", json=SPAM, headers={"X-Request-ID": 'evil" {"status":200}' + "x" * 200})
    assert resp.status_code == 401
    rid = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert [ln["status"] for ln in request_log if ln["request_id"] == rid] == [401]


def test_log_lines_are_ascii_json_whatever_the_text(tmp_path):
    from service import logs

    plain = json.loads(logs._line(1.5, "info", "winnow.request", {"path": "/ping", "status": 200}))
    assert plain == {"ts": 1.5, "level": "info", "logger": "winnow.request", "path": "/ping", "status": 200}
    for text in ("Grüße 😀", "lone \ud800 surrogate"):
        line = logs._line(1.5, "warning", "winnow.x", {"message": text, "n": {1: 2}})
        assert line.isascii() and json.loads(line)["message"] == text and json.loads(line)["n"] == {"1": 2}


def test_every_winnow_logger_writes_json_lines_a_quoted_path_cannot_break(tmp_path, monkeypatch):
    import io
    import logging

    from service import logs

    make_app(tmp_path, dead_redis_url())
    logs._handler.flush()  # earlier tests' lines go where they were headed
    stream = io.StringIO()
    monkeypatch.setattr(logs._handler, "stream", stream)
    plain: list[logging.LogRecord] = []  # what a handler of a deployment's own on the root logger would print
    root_handler = logging.Handler()
    root_handler.emit = plain.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(root_handler)
    forged = '/x\n{"ts":1,"level":"info","logger":"winnow.request","forged":true}/label'
    logging.getLogger("winnow.http").warning("redis unavailable on POST %s", forged)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("winnow.akismet").exception("unhandled error on POST %s", forged)
    logs._handler.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is JSON
    lines = [ln for ln in lines if ln["logger"] in ("winnow.http", "winnow.akismet")]  # not other threads' lines
    assert [(ln["logger"], ln["level"]) for ln in lines] == [("winnow.http", "warning"), ("winnow.akismet", "error")]
    assert all(forged in ln["message"] and "forged" not in ln for ln in lines)
    assert "RuntimeError: boom" in lines[1]["exception"]
    logging.getLogger().removeHandler(root_handler)
    assert not [rec for rec in plain if rec.name.startswith("winnow")]  # once, as JSON, never again as text


def test_a_worker_freezes_its_heap_and_again_after_a_model_swap(tmp_path, monkeypatch):
    import types

    from service import ops

    calls: list[str] = []
    monkeypatch.setattr(ops, "gc", types.SimpleNamespace(**{
        name: (lambda name=name: calls.append(name)) for name in ("collect", "freeze", "unfreeze")}))
    monkeypatch.setattr(ops, "_frozen_version", ops._UNSET)
    app = make_app(tmp_path, dead_redis_url())
    client = app.test_client()
    ops._next_model_check = 0.0
    client.get("/ping")
    assert calls == []  # outside a gunicorn worker nothing is frozen
    ops.freeze_heap(app)
    assert calls == ["collect", "freeze"] and ops._frozen_version == "v-test"
    ops._next_model_check = 0.0
    client.get("/ping")
    assert calls == ["collect", "freeze"]  # same model: nothing collected or frozen on the request path
    app.extensions["winnow"].serving = ServingModel.fixed(small_model(), "v-next")
    ops._next_model_check = 0.0
    assert client.get("/ping").status_code == 200
    assert calls[2:] == ["unfreeze", "collect", "freeze"] and ops._frozen_version == "v-next"


def test_a_worker_reports_its_model_once_booted_not_at_its_first_answer(tmp_path, monkeypatch):
    import types

    from service import metrics, ops

    monkeypatch.setattr(ops, "gc", types.SimpleNamespace(collect=lambda: 0, freeze=lambda: None))
    monkeypatch.setattr(ops, "_frozen_version", ops._UNSET)
    monkeypatch.setattr(metrics, "_model_version", None)
    metrics.MODEL_LOADED.set(0)
    app = make_app(tmp_path, dead_redis_url())
    ops.freeze_heap(app)  # what gunicorn's post_worker_init runs, before the worker answers anything
    assert metrics.MODEL_LOADED._value.get() == 1


def test_a_workers_model_gauges_follow_a_promotion_without_a_request(tmp_path, r, monkeypatch):
    """A worker nobody asks still reports the version it swapped to (a rollback used to leave the old version at 1
    until that worker answered something)."""
    from service import metrics
    from training.registry import Registry

    monkeypatch.setattr(metrics, "_model_version", None)
    settings = Settings.from_env({}, redis_url=ops_redis_url(), data_dir=tmp_path, secret_key="t" * 64)
    client = redis.Redis.from_url(ops_redis_url())
    serving = ServingModel(client, settings)  # not started: the test drives its polls
    app = create_app(settings, redis_client=client, serving=serving)
    registry = Registry.from_settings(client, settings)
    try:
        first = registry.publish(small_model(), promote=True)
        assert serving.check_now()
        second = registry.publish(small_model(), promote=True)
        assert serving.check_now()

        def info(version):
            return metrics.MODEL_INFO.labels(version=version)._value.get()

        assert (info(first), info(second)) == (0, 1) and metrics.MODEL_LOADED._value.get() == 1
        registry.promote(first, by="test")  # a rollback
        assert serving.check_now()
        assert (info(first), info(second)) == (1, 0)
    finally:
        app.extensions["winnow"].writer.stop()


def test_a_booted_worker_has_read_every_key_before_its_first_request(tmp_path, r, monkeypatch):
    """So a worker that has answered nothing yet still knows every key and site setting if Redis goes away."""
    import types

    from service import ops

    monkeypatch.setattr(ops, "gc", types.SimpleNamespace(collect=lambda: 0, freeze=lambda: None))
    plain, record = KeyStore(r).create(SITE, "site")
    app = make_app(tmp_path, ops_redis_url())
    services = app.extensions["winnow"]
    ops.worker_booted(app)
    try:
        services.keys.redis = redis.Redis(port=free_port(), socket_connect_timeout=0.1)  # Redis gone
        assert services.keys.authenticate(plain) == record
        assert services.sites.policy(SITE) == services.sites.base
    finally:
        services.keys.directory.stop()


def test_metric_labels_stay_bounded_whatever_the_client_sends(tmp_path):
    client = make_app(tmp_path, dead_redis_url()).test_client()
    client.open("/no/such/page/12345", method="BREW")
    text = client.get("/metrics").data.decode()
    assert _sample(text, "winnow_http_request_duration_seconds_count", method="OTHER", route="<unmatched>") == 1
    labels = " ".join(re.findall(r"\{[^}]*\}", text))  # label values only: a sample's value may hold any digits
    assert "BREW" not in labels and "12345" not in labels


# ---- OpenAPI -----------------------------------------------------------------------------------------------------
def test_openapi_describes_every_api_route_with_its_roles(tmp_path):
    app = make_app(tmp_path, dead_redis_url())
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.") and "bearerAuth" in doc["components"]["securitySchemes"]
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = openapi.openapi_path(rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            served.add((path, method.lower()))
            assert path in doc["paths"], f"{rule.rule} is not in the OpenAPI document"
            op = doc["paths"][path].get(method.lower())
            assert op is not None, f"{method} {rule.rule} is not in the OpenAPI document"
            required = getattr(app.view_functions[rule.endpoint], "required_roles", None)
            if required is not None:
                assert set(op[openapi.ROLES_KEY]) | {"admin"} == set(required), f"roles of {method} {rule.rule}"
    documented = {(p, m) for p, ops in doc["paths"].items() if p.startswith("/api/v1") for m in ops}
    assert documented == served, f"documented but not served: {documented - served}"


def test_openapi_comment_schema_matches_the_comment_dataclass():
    import dataclasses

    props = openapi.document()["components"]["schemas"]["Comment"]["properties"]
    assert set(props) == {f.name for f in dataclasses.fields(Comment)}


# ---- rate limits -----------------------------------------------------------------------------------------------
def test_rate_limit_is_per_key_and_answers_429_with_retry_after(tmp_path, r):
    client = make_app(tmp_path, ops_redis_url(), rate_limit="3/minute").test_client()
    store = KeyStore(r)
    first, _ = store.create(SITE, "site")
    second, _ = store.create("https://other.example.org", "site")
    answers = [client.post("/api/v1/check", json=SPAM, headers={"Authorization": f"Bearer {first}"})
               for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"]["code"] == "rate_limited"
    ok = client.post("/api/v1/check", json=SPAM, headers={"Authorization": f"Bearer {second}"})
    assert ok.status_code == 200
    assert client.get("/healthz").status_code == 200  # probes are never limited


@pytest.mark.parametrize("hops", [0, 1])
def test_behind_a_proxy_clients_without_a_key_keep_budgets_of_their_own(tmp_path, r, hops):
    client = make_app(tmp_path, ops_redis_url(), rate_limit="2/minute", proxy_hops=hops).test_client()

    def anonymous(address):  # what a load balancer in front of Winnow sends on
        return client.get("/api/v1/queue", headers={"X-Forwarded-For": address},
                          environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code

    assert [anonymous("198.51.100.7") for _ in range(3)] == [401, 401, 429]
    # With the proxy believed, another client has its own budget; without, everyone shares the proxy's.
    assert anonymous("203.0.113.9") == (401 if hops else 429)


def test_akismet_face_is_limited_in_plain_text(tmp_path, r):
    client = make_app(tmp_path, ops_redis_url(), rate_limit="2/minute").test_client()
    key, _ = KeyStore(r).create(SITE, "site")
    answers = [client.post("/1.1/verify-key", data={"api_key": key, "blog": SITE}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1].mimetype == "text/plain" and int(answers[-1].headers["Retry-After"]) >= 1


def test_limiter_keeps_counting_in_memory_when_redis_is_down():
    app = Flask(__name__)
    limits.init_app(app, Settings(redis_url=dead_redis_url(), rate_limit="2/minute", secret_key="x"))
    app.get("/thing")(lambda: "ok")
    client = app.test_client()
    assert [client.get("/thing").status_code for _ in range(3)] == [200, 200, 429]


def test_counts_are_shared_between_processes_through_redis(r):
    url = "winnow+" + ops_redis_url()
    one, two = limits.SharedCounterStorage(url), limits.SharedCounterStorage(url)
    assert [one.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert two.incr("k", 60) == 1
    one.flush()
    two.flush()
    assert two.get("k") == 4  # learnt the other process's three hits
    one.flush()
    assert one.incr("k", 60) == 5
    assert 55 <= one.get_expiry("k") - time.time() <= 60


def test_unflushed_hits_survive_a_redis_outage():
    storage = limits.SharedCounterStorage("winnow+" + dead_redis_url(), socket_connect_timeout=0.2)
    assert storage.incr("k", 60, amount=2) == 2
    with pytest.raises(redis.ConnectionError):
        storage.flush()
    assert storage.get("k") == 2 and storage.incr("k", 60) == 3


# ---- metrics across gunicorn workers ---------------------------------------------------------------------------
def gunicorn_app() -> Flask:
    """The app gunicorn serves in the metrics test: the real factory, with a small fixed model."""
    settings = Settings.from_env()
    return create_app(settings, serving=ServingModel.fixed(small_model(), "v-gunicorn"))


def _get(url: str, *, body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


_WORKER_OF_CONF = """
import runpy, sys
from gunicorn.config import Config
cfg = Config()
for name, value in runpy.run_path("service/gunicorn_conf.py").items():
    if name in cfg.settings:
        cfg.set(name, value)
print(cfg.worker_class_str, cfg.threads)
"""


@pytest.mark.parametrize("env, expected", [
    ({}, "gthread 4"),
    ({"WINNOW_WEB_WORKER_CLASS": "sync"}, "sync 1"),  # gunicorn would quietly run sync with threads as gthread
    ({"WINNOW_WEB_WORKER_CLASS": "gthread", "WINNOW_WEB_THREADS": "8"}, "gthread 8"),
])
def test_gunicorn_runs_the_worker_class_asked_for(tmp_path, env, expected):
    base = {k: v for k, v in os.environ.items() if not k.startswith("WINNOW_WEB_")}
    out = subprocess.run([sys.executable, "-c", _WORKER_OF_CONF], cwd=ROOT, capture_output=True, text=True,
                         env={**base, **env, "WINNOW_DATA_DIR": str(tmp_path)}, check=True).stdout
    assert out.split() == expected.split()


def test_metrics_add_up_across_two_gunicorn_workers(tmp_path, r):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "prom"
    key, _ = KeyStore(r).create(SITE, "site")
    env = dict(os.environ, REDIS_URL=ops_redis_url(), WINNOW_BIND=f"127.0.0.1:{port}", WINNOW_WEB_WORKERS="2",
               WINNOW_WEB_WORKER_CLASS="sync", WINNOW_DATA_DIR=str(tmp_path), WINNOW_SECRET_KEY="s" * 64,
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PYTHONPATH=str(ROOT))
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's file must be cleared at start
    log = open(tmp_path / "gunicorn.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "--config", "service/gunicorn_conf.py",
                             "tests.test_ops:gunicorn_app()"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            try:
                if _get(base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not become ready"
            time.sleep(0.2)
        assert not (metrics_dir / "counter_999999.db").exists()

        def serving_pids() -> set[str]:
            return {re.search(r"_(\d+)\.db$", p.name).group(1) for p in metrics_dir.glob("histogram_*.db")}

        # Both workers must be up and answering before counting: probe concurrently until each has answered.
        probes = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while len(serving_pids()) < 2:
                assert time.monotonic() < deadline, f"only {serving_pids()} answered"
                list(pool.map(lambda _: _get(base + "/healthz"), range(16)))
                probes += 16

        pings, checks = 120, 40
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: _get(base + "/ping")[0], range(pings)))
            got += list(pool.map(lambda _: _get(base + "/api/v1/check", body=SPAM,
                                                headers={"Authorization": f"Bearer {key}"})[0], range(checks)))
        assert got == [200] * (pings + checks)
        assert len(serving_pids()) == 2

        status, text = _get(base + "/metrics")
        text = text.decode()
        assert status == 200
        assert _sample(text, "winnow_http_request_duration_seconds_count", route="/ping", method="GET",
                       status="200") == pings
        assert _sample(text, "winnow_http_request_duration_seconds_count", route="/api/v1/check", method="POST",
                       status="200") == checks
        assert _sample(text, "winnow_verdicts_total", source="api") == checks
        # The probes were answered by both workers (that is how the loop above ended), so this total spans both.
        assert _sample(text, "winnow_http_request_duration_seconds_count", route="/healthz") == probes
        assert _sample(text, "winnow_model_info", version="v-gunicorn") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
