"""Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document and a bare ping.

None of these needs a key or touches the rate limiter; only /readyz talks to Redis, and only with a short PING.
"""
from __future__ import annotations

import functools
import gc
import logging
import time

import redis
from flask import Blueprint, Flask, Response, jsonify
from redis.backoff import NoBackoff
from redis.retry import Retry

from service import logs, metrics, openapi
from service.context import EXTENSION, services

log = logging.getLogger("winnow.ops")

bp = Blueprint("ops", __name__)


@bp.get("/ping")
def ping() -> Response:
    # The benchmark's baseline: the whole middleware stack (request id, log line, metrics), no work.
    return Response("pong", mimetype="text/plain")


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"alive": True})


@functools.lru_cache(maxsize=8)
def _probe_client(url: str) -> redis.Redis:
    # One quick try: a probe must answer within its own timeout, not after the app client's retries and backoff.
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


@bp.get("/readyz")
def readyz() -> Response:
    svc = services()
    checks: dict[str, dict] = {}
    try:
        _probe_client(svc.settings.redis_url).ping()
        checks["redis"] = {"ok": True}
    except redis.RedisError as exc:
        # The probe is public: name the failure, keep the server's address for the log.
        log.warning("readyz: Redis is not reachable: %s", exc)
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
    version, model, refused = _observe_serving(svc.serving)
    checks["model"] = {"ok": model is not None, "version": version}
    if model is None:
        checks["model"]["error"] = "no model loaded yet"
    if refused is not None:
        # Still ready: it answers with the model it has, and taking it out of rotation would take every node out
        # when all of them refuse (a scikit-learn upgrade everywhere). Alert on winnow_model_refused instead.
        checks["model"]["warning"] = (f"cannot load model {refused}, which the registry serves; serving "
                                      f"{version} instead (another deployment's secret or scikit-learn? see the log)")
    ready = all(c["ok"] for c in checks.values())
    body = {"ready": ready, "checks": checks}
    if not ready:
        body["failed"] = [name for name, c in checks.items() if not c["ok"]]
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
def metrics_route() -> Response:
    _observe_serving(services().serving)  # this worker's own figures current, whenever it last answered
    return Response(metrics.render(), mimetype=None, content_type=metrics.CONTENT_TYPE)


@bp.get("/api/v1/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document())


_MODEL_CHECK_SECONDS = 1.0
_next_model_check = 0.0
_UNSET = object()
_frozen_version: object = _UNSET  # the model version whose heap is frozen; _UNSET while freezing is off


def worker_booted(app: Flask) -> None:
    """What a gunicorn web worker does once it has loaded the app, before it answers anything: read every key and
    site setting (so an idle worker still knows them if Redis goes away), start following them, and freeze the
    heap."""
    directory = app.extensions[EXTENSION].keys.directory
    if directory is not None:
        try:
            directory.refresh()
        except redis.RedisError as exc:  # read as soon as Redis answers
            log.warning("keys and site settings not read at start: %s", exc)
        directory.ensure_running()
    freeze_heap(app)


def worker_exiting(app: Flask) -> None:
    """What a gunicorn web worker does as it exits, however it was asked to (Ctrl-C, SIGTERM, a restart): write
    what it holds in memory and would otherwise lose, the checks it answered in its last moments first (they are
    written behind their answers, every quarter second), then its Akismet call counts and its rate-limit hits."""
    svc = app.extensions[EXTENSION]
    if not svc.writer.flush(timeout=3.0):
        log.warning("checks answered in the last moments could not be stored before exit (Redis unavailable)")
    svc.writer.stop(timeout=0.5)
    usage = app.extensions.get("winnow.akismet.usage")  # service.akismet.Usage
    limiter = app.extensions.get("winnow.limiter")  # service.limits.RateLimiter
    for what, flush in (("Akismet call counts", usage.flush if usage else None),
                        ("rate-limit hits", limiter.storage.flush if limiter else None)):
        if flush is None:
            continue
        try:
            flush()
        except redis.RedisError as exc:
            log.warning("%s not written before exit: %s", what, exc)


def _observe_serving(serving) -> tuple[str | None, object, str | None]:
    """(version, model, version refused) this process serves, written to its model gauges."""
    version, model = serving.snapshot()
    refused = getattr(serving, "refused_current", None)
    metrics.observe_model(version if model is not None else None)
    metrics.MODEL_REFUSED.set(1 if refused else 0)
    return version, model, refused


def freeze_heap(app: Flask) -> None:
    """Report the loaded model in the metrics (now, not at the worker's first answer: a worker that has served
    nothing yet would read 0), and take everything alive now (the imported libraries, the loaded model) out of the
    cyclic garbage collector's scans: a full collection would otherwise walk the model's ~100k objects, a pause of
    tens of milliseconds every few thousand requests. A web worker calls this once it has loaded the app
    (service/gunicorn_conf.py); after a model swap the next request collects the old model and freezes again."""
    global _frozen_version
    version, _, _ = _observe_serving(app.extensions[EXTENSION].serving)
    gc.collect()
    gc.freeze()
    _frozen_version = version


def _refreeze(version: str | None) -> None:
    global _frozen_version
    if _frozen_version is _UNSET or version == _frozen_version:
        return
    _frozen_version = version
    gc.unfreeze()  # the old model's cycles are only found by a collection over unfrozen objects
    gc.collect()
    gc.freeze()


def _note_model(response: Response) -> Response:
    """Keep this worker's model-version gauge current (at most once a second: it changes only on a promotion)."""
    global _next_model_check
    now = time.monotonic()
    if now >= _next_model_check:
        _next_model_check = now + _MODEL_CHECK_SECONDS
        version, _, _ = _observe_serving(services().serving)
        _refreeze(version)
    return response


def _nosniff(response: Response) -> Response:
    """Every answer is read as the type it declares: text/plain Akismet answers and CSV exports echo text that
    callers sent, which a browser must never sniff into a page."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def init_app(app: Flask) -> None:
    serving = app.extensions[EXTENSION].serving
    if hasattr(serving, "on_change"):
        # Every worker's model gauges follow a promotion or rollback when it happens, even a worker nobody asks.
        serving.on_change = lambda: _observe_serving(serving)
    logs.init_app(app)
    app.register_blueprint(bp)
    app.after_request(_note_model)
    app.after_request(_nosniff)
