"""Structured request logs and request ids: one JSON line per request on stderr, plus the latency histogram.

A line carries the request id, method, path, route, status, duration and the key id once auth has run — never a
comment's content, a query string, a header value other than the request id, or a key.
"""
from __future__ import annotations

import atexit
import collections
import json
import logging
import random
import re
import sys
import threading
import time
from typing import TextIO

import orjson
from flask import Flask, Response, g, request, request_started

from service import metrics
from training.threads import ProcessThread

logger = logging.getLogger("winnow.request")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is echoed only when it is short and plain, so it can neither forge log lines nor bloat them.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_FLUSH_SECONDS = 0.1
_AS_STR = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME  # written as str(), as json.dumps did


def _line(created: float, level: str, name: str, fields: dict) -> str:
    obj = {"ts": round(created, 3), "level": level, "logger": name, **fields}
    try:
        line = orjson.dumps(obj, default=str, option=_AS_STR).decode()
    except TypeError:  # e.g. a message holding a lone surrogate, or a dict with keys that are not strings
        line = ""
    if line.isascii() and line:
        return line
    # Text outside ASCII is written \u-escaped, so a line is readable whatever encoding stderr has.
    return json.dumps(obj, separators=(",", ":"), default=str)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields is None:
            fields = {"message": record.getMessage()}
            if record.exc_info:
                fields["exception"] = self.formatException(record.exc_info)
        return _line(record.created, record.levelname.lower(), record.name, fields)


class _BatchedLines(logging.Handler):
    """Lines gathered in memory and written by a daemon thread a few times a second: a request never waits for
    a write() to stderr, and a busy worker writes many lines per system call. Flushed at exit."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream
        self._pending: collections.deque[str] = collections.deque()  # appended by requests, drained by one thread
        self._wake = threading.Event()
        self._thread = ProcessThread(self._run, "winnow-log-writer", on_start=self._on_start)
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:  # logging must never break a request
            self.handleError(record)

    def write(self, line: str) -> None:
        self._thread.ensure()
        self._pending.append(line + "\n")

    def flush(self) -> None:
        pending = self._pending
        lines = [pending.popleft() for _ in range(len(pending))]
        if lines:
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed at shutdown: nothing left to tell
                pass

    def _on_start(self, forked: bool) -> None:
        if forked:  # lines the parent had not written yet are the parent's to write
            self._pending.clear()

    def _run(self) -> None:
        while True:
            self._wake.wait(_FLUSH_SECONDS)
            self.flush()


_handler: _BatchedLines | None = None


def configure() -> None:
    """Request lines, and every other `winnow.*` logger's messages, as JSON lines on stderr: a request's path or a
    comment's field quoted in a message can never start a line of its own."""
    global _handler
    if any(getattr(h, "_winnow", False) for h in logger.handlers):
        return
    handler = _BatchedLines(sys.stderr)
    handler.setFormatter(_JsonLines())
    handler._winnow = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    _handler = handler
    parent = logging.getLogger("winnow")
    parent.addHandler(handler)
    if parent.level == logging.NOTSET:
        parent.setLevel(logging.INFO)
    parent.propagate = False  # a handler on the root logger would print each message again, as plain text


def _log_request(fields: dict) -> None:
    """One request line. With only Winnow's own handler attached (the usual case) the line goes straight to it,
    skipping the LogRecord that logging would build; any other handler gets it through logging as usual."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = logger.handlers
    if len(handlers) == 1 and handlers[0] is _handler and not logger.filters and not _handler.filters:
        _handler.write(_line(time.time(), "info", logger.name, fields))
    else:
        logger.info("request", extra={"fields": fields})


def _started(sender: Flask, **_: object) -> None:
    # request_started fires before any before_request hook, so a request the limiter or auth refuses early is
    # still timed and logged. Ids come from the per-process generator (re-seeded after fork): an id names a
    # request, it guards nothing, and os.urandom costs a system call on every request.
    ctx = g._get_current_object()  # one proxy lookup per request, not one per read (each costs a failed getattr)
    ctx._winnow_started = time.perf_counter()
    incoming = request._get_current_object().headers.get(REQUEST_ID_HEADER, "")
    ctx.request_id = incoming if incoming and _SAFE_ID.fullmatch(incoming) else f"{random.getrandbits(128):032x}"


def request_id() -> str:
    return g.get("request_id") or ""


def _finished(response: Response) -> Response:
    ctx = g._get_current_object()
    started = ctx.get("_winnow_started")
    duration = time.perf_counter() - started if started is not None else 0.0
    req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not ten
    rule = req.url_rule
    route = rule.rule if rule is not None else "<unmatched>"
    status = response.status_code
    method = req.method if req.method in _METHODS else "OTHER"  # a client must not mint label values
    metrics.observe_request(route, method, status, duration)
    if status == 429:
        metrics.RATE_LIMITED.inc()
    rid = ctx.get("request_id") or ""
    if rid:
        response.headers[REQUEST_ID_HEADER] = rid
    principal = ctx.get("principal")
    _log_request({
        "request_id": rid,
        "method": req.method,
        "path": req.path,
        "route": route,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
        "key_id": getattr(principal, "id", None),
        "remote_addr": req.remote_addr,
    })
    return response


def init_app(app: Flask) -> None:
    configure()
    request_started.connect(_started, app)
    app.after_request(_finished)
