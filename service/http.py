"""JSON in and out: request bodies parsed so every failure names its field, and every error answered in one shape.

Error body: {"error": {"code", "message", "field"?, "fields"?}}. Bad input is always a 4xx; an unexpected
exception is logged with its request id and answered 500 in the same shape, never as an HTML page.
"""
from __future__ import annotations

import io
import json
import logging
from typing import Any, Callable, Iterable

import orjson
import redis
from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from training.schema import ContentTooLarge, ValidationError, check_text, is_text, unique_members

log = logging.getLogger("winnow.http")

MAX_BODY_BYTES = 1024 * 1024
_KEPT_HEADERS = ("Retry-After", "WWW-Authenticate", "Allow")


class ApiError(Exception):
    """An error with its HTTP status, a stable machine code and, when known, the field it is about."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 fields: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.fields = fields
        self.headers = headers or {}


class BatchInvalid(ApiError):
    def __init__(self, errors: list[ValidationError]):
        first = errors[0]
        status = 413 if all(isinstance(e, ContentTooLarge) for e in errors) else 400
        super().__init__(status, "invalid" if status == 400 else "too_large",
                         f"{len(errors)} invalid field(s); first: {first.field}: {first.message}",
                         field=first.field, fields=[e.to_dict() for e in errors])


def error_response(status: int, code: str, message: str, *, field: str | None = None,
                   fields: list[dict[str, str]] | None = None, headers: Iterable[tuple[str, str]] = ()) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    if fields:
        body["fields"] = fields
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in headers:
        response.headers[name] = value
    return response


def json_body(*, required: bool = True) -> Any:
    """The request body as JSON; 400 naming `body` for broken JSON or bad UTF-8, 413 for an oversized body."""
    raw = request._get_current_object().get_data(cache=True)  # raises RequestEntityTooLarge over the limit
    if not raw or raw.isspace():
        if required:
            raise ApiError(400, "invalid", "a JSON body is required", field="body")
        return {}
    try:
        # orjson (strict RFC 8259, in C) reads what it accepts as the standard parser does, except integers past
        # 64 bits, which it gives as floats: a body holding a float that large is read again by the standard parser.
        body = orjson.loads(raw)
        if not _has_huge_float(body):
            _refuse_repeated_names(raw)
            return body
    except orjson.JSONDecodeError:
        pass  # the standard parser says what is wrong
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_encoding", f"body is not valid UTF-8 (byte {exc.start})", field="body") from None
    try:
        body = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=unique_members)
    except (ApiError, ValidationError):
        raise
    except RecursionError:
        raise ApiError(400, "bad_json", "body nests too deeply", field="body") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                       f"{exc.colno}", field="body") from None
    except ValueError:  # Python reads integers of at most 4,300 digits
        raise ApiError(400, "bad_json", "body holds a number too long to read", field="body") from None
    _refuse_lone_surrogates(body)
    return body


def _refuse_repeated_names(raw: bytes) -> None:
    """400 when an object in the body names a member twice (see unique_members): orjson keeps the last one without
    saying so. The standard parser reads the body again keeping every member (about 9 µs for a check's body, as
    fast as looking for repeated names in its text first)."""
    try:
        json.loads(raw, object_pairs_hook=unique_members)
    except RecursionError:  # orjson reads 1,024 levels, the standard parser somewhat fewer
        raise ApiError(400, "bad_json", "body nests too deeply", field="body") from None


def _has_huge_float(value: Any) -> bool:
    """Whether a parsed body holds a float at or beyond the 64-bit integer range (where orjson puts big integers)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float and not -9.223372036854775808e18 < item < 1.8446744073709552e19:
            return True
    return False


def _refuse_lone_surrogates(value: Any) -> None:
    """400 naming the first string (or key) that holds a lone surrogate escape such as "\\ud800": it is no text,
    nothing can store or send it on. orjson refuses them; the standard parser, read after it, does not."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        kind = type(item)
        if kind is str:
            check_text(path or "body", item)
        elif kind is dict:
            for key, child in item.items():
                if not is_text(key):
                    raise ValidationError(path or "body", "holds a name that is not valid UTF-8 text (lone surrogate)")
                stack.append((f"{path}.{key}" if path else key, child))
        elif kind is list:
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))


def _refuse_constant(name: str) -> Any:
    raise ApiError(400, "bad_json", f"body is not valid JSON: {name} is not a number", field="body")


def json_object(*, required: bool = True) -> dict[str, Any]:
    body = json_body(required=required)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "body must be a JSON object", field="body")
    return body


def _snake(name: str) -> str:
    return name.lower().replace(" ", "_").replace("-", "_")


def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, field=exc.field, fields=exc.fields,
                          headers=exc.headers.items())


def _validation_error(exc: ValidationError) -> Response:
    status, code = (413, "too_large") if isinstance(exc, ContentTooLarge) else (400, "invalid")
    return error_response(status, code, f"{exc.field}: {exc.message}", field=exc.field)


PAGE_ERRORS = "winnow.page_errors"  # app.extensions: renderers of HTML error pages, each for the paths it claims


def _http_error(exc: HTTPException) -> Response | HTTPException:
    if exc.code is None or exc.code < 400:  # routing redirects are HTTPExceptions too
        return exc
    for render in current_app.extensions.get(PAGE_ERRORS, ()):  # a person's browser asked (the console's pages)
        page = render(exc)
        if page is not None:
            return page
    kept = [(h, v) for h, v in exc.get_response().headers.items() if h in _KEPT_HEADERS]
    field = "body" if isinstance(exc, RequestEntityTooLarge) else None
    message = exc.description or exc.name
    if isinstance(exc, RequestEntityTooLarge):
        message = f"request body is larger than {MAX_BODY_BYTES} bytes"
    return error_response(exc.code, _snake(exc.name), message, field=field, headers=kept)


def _store_down(exc: redis.RedisError) -> Response:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        log.warning("redis unavailable on %s %s: %s", request.method, request.path, exc)
    else:  # Redis answered but refused: out of memory, a read-only replica, a failing disk (MISCONF), ...
        log.error("redis refused a command on %s %s: %r", request.method, request.path, exc)
    return error_response(503, "store_unavailable", store_down_message(), headers=[("Retry-After", "5")])


def store_down_message() -> str:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return "the data store is unavailable; retry later"
    return "the data store is unavailable; nothing was stored, retry later"


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "internal error; it has been logged")


class LengthenedBodies:
    """WSGI middleware: a body sent without a length (chunked) is read here, one byte past the limit at most, and
    handed on with its length, so an oversized one is answered 413 like any other.

    werkzeug reads a stream without a length only up to the limit and then stops as if it had ended, so the handler
    would see the first megabyte of an oversized body and answer as if that were all of it."""

    def __init__(self, app: Callable, limit: int):
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        # Only from a server that ends the stream itself (gunicorn does): elsewhere a read could wait for the client.
        if (environ.get("wsgi.input_terminated") and not environ.get("CONTENT_LENGTH")
                and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
            stream = environ["wsgi.input"]
            parts, size = [], 0
            while size <= self.limit:
                part = stream.read(min(64 * 1024, self.limit + 1 - size))
                if not part:
                    break
                parts.append(part)
                size += len(part)
            environ["wsgi.input"] = io.BytesIO(b"".join(parts))
            environ["CONTENT_LENGTH"] = str(size)  # past the limit: werkzeug refuses it with 413 when it is read
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)


def init_app(app: Flask) -> None:
    """App-wide JSON errors; a blueprint speaking another protocol (Akismet, HTML console) registers its own."""
    app.config.setdefault("MAX_CONTENT_LENGTH", MAX_BODY_BYTES)
    app.wsgi_app = LengthenedBodies(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _store_down)
    app.register_error_handler(Exception, _unexpected)
