"""Structured request logs and request ids: one JSON line per request on stderr, plus the latency histogram.

A line carries the request id, method, path, route, status, duration and the key id once auth has run — never a
comment's content, a query string, a header value other than the request id, or a key.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

from flask import Flask, Response, g, request, request_started

from service import metrics

logger = logging.getLogger("winnow.request")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is echoed only when it is short and plain, so it can neither forge log lines nor bloat them.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields is None:
            fields = {"message": record.getMessage()}
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name}
        line.update(fields)
        return json.dumps(line, separators=(",", ":"), default=str)


def _configure_logger() -> None:
    if any(getattr(h, "_winnow", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    handler._winnow = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _started(sender: Flask, **_: object) -> None:
    # request_started fires before any before_request hook, so a request the limiter or auth refuses early is
    # still timed and logged.
    g._winnow_started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _SAFE_ID.fullmatch(incoming) else os.urandom(16).hex()


def request_id() -> str:
    return g.get("request_id") or ""


def _finished(response: Response) -> Response:
    started = g.get("_winnow_started")
    duration = time.perf_counter() - started if started is not None else 0.0
    rule = request.url_rule
    route = rule.rule if rule is not None else "<unmatched>"
    status = response.status_code
    method = request.method if request.method in _METHODS else "OTHER"  # a client must not mint label values
    metrics.REQUEST_LATENCY.labels(route=route, method=method, status=str(status)).observe(duration)
    if status == 429:
        metrics.RATE_LIMITED.inc()
    rid = request_id()
    if rid:
        response.headers[REQUEST_ID_HEADER] = rid
    principal = g.get("principal")
    fields = {
        "request_id": rid,
        "method": request.method,
        "path": request.path,
        "route": route,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
        "key_id": getattr(principal, "id", None),
        "remote_addr": request.remote_addr,
    }
    logger.info("request", extra={"fields": fields})
    return response


def init_app(app: Flask) -> None:
    _configure_logger()
    request_started.connect(_started, app)
    app.after_request(_finished)
