"""Per-key rate limits kept in Redis (flask-limiter), so every web process of a deployment shares one budget per key.

A refused request gets 429 with a JSON body and Retry-After (what Akismet clients honour too). The limiter must
never turn a check into a 500: if Redis is unreachable it counts in process memory until Redis is back.
"""
from __future__ import annotations

import math
import time

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse_many

from service.http import error_response
from training.settings import Settings

# Operations routes stay reachable for probes and scrapers whatever a key has spent.
EXEMPT_BLUEPRINTS = frozenset({"ops"})
PLAIN_TEXT_BLUEPRINTS = frozenset({"akismet"})
_STORAGE_TIMEOUT = 0.25  # seconds; a hung Redis must not hold a request longer than this before the fallback


def rate_key() -> str:
    """The bucket: the authenticated key's id, else the client address."""
    principal = g.get("principal")
    if principal is None:
        authenticate = current_app.extensions.get("winnow.authenticate")
        if authenticate is not None:
            try:
                principal = authenticate()
            except Exception:  # a refused or unreadable credential is auth's answer to give, not the limiter's
                principal = None
    key_id = getattr(principal, "id", None)
    if key_id:
        return "key:" + str(key_id)
    return "addr:" + (request.remote_addr or "unknown")


def _exempt() -> bool:
    return request.blueprint in EXEMPT_BLUEPRINTS


def _retry_after(limiter: Limiter, exc: RateLimitExceeded) -> int:
    """Whole seconds until the breached window resets; the window length if the store cannot say."""
    current = limiter.current_limit
    try:
        if current is not None:
            return max(1, math.ceil(current.reset_at - time.time()))
    except Exception:  # the store went away between the hit and this question
        pass
    return max(1, int(exc.limit.limit.get_expiry()))


def _too_many(limiter: Limiter, exc: RateLimitExceeded) -> Response:
    seconds = _retry_after(limiter, exc)
    message = f"rate limit of {exc.limit.limit} exceeded for this key; retry after {seconds} s"
    headers = [("Retry-After", str(seconds))]
    if request.blueprint in PLAIN_TEXT_BLUEPRINTS:
        # The Akismet protocol answers in text/plain without a trailing newline; its SDKs act on status + Retry-After.
        return Response(message, status=429, mimetype="text/plain", headers=headers)
    return error_response(429, "rate_limited", message, headers=headers)


def build_limiter(settings: Settings) -> Limiter:
    parse_many(settings.rate_limit)  # a bad WINNOW_RATE_LIMIT fails at start, not on the first request
    return Limiter(
        key_func=rate_key,
        application_limits=[settings.rate_limit],  # one budget per key across every route
        storage_uri=settings.redis_url,
        storage_options={"socket_timeout": _STORAGE_TIMEOUT, "socket_connect_timeout": _STORAGE_TIMEOUT},
        strategy="fixed-window",  # one Redis round trip per request
        headers_enabled=False,  # X-RateLimit-* would cost a second round trip on every request
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )


def init_app(app: Flask, settings: Settings | None = None) -> Limiter:
    settings = settings or app.config.get("WINNOW_SETTINGS") or Settings.from_env()
    limiter = build_limiter(settings)
    limiter.request_filter(_exempt)
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, lambda exc: _too_many(limiter, exc))
    app.extensions["winnow.limiter"] = limiter
    return limiter
