"""Who is asking: a Bearer key or token for the API, or the console's signed session cookie plus a CSRF header.

`requires(*roles)` guards a route and sets `g.principal` (a training.apikeys.KeyRecord); `site_scope` keeps a
site key, or a moderator scoped to one site, inside its own site. Refusals are JSON 401/403.
"""
from __future__ import annotations

import functools
import hmac
import secrets
from typing import Callable

from flask import Flask, g, request, session

from service.context import services
from service.http import ApiError
from training import rediskeys
from training.apikeys import KeyRecord, normalise_site

SESSION_KEY = "winnow_session"
SESSION_SECONDS = 12 * 3600  # a console session's lifetime, as the cookie's
CSRF_SESSION_KEY = "winnow_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="winnow"'}
_UNSET = object()


def authenticate() -> KeyRecord | None:
    """The request's principal (cached on g), None when it presents no credential; raises 401/403 for a bad one."""
    ctx = g._get_current_object()  # one context lookup for the reads and writes below
    cached = ctx.get("principal", _UNSET)  # not getattr: a miss on g raises (and formats) an AttributeError
    if cached is not _UNSET:
        return cached
    req = request._get_current_object()
    header = req.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "Authorization must be 'Bearer <key>'", field="Authorization",
                           headers=_CHALLENGE)
        record = services().keys.authenticate(token.strip())
        if record is None:
            raise ApiError(401, "unauthorized", "unknown or revoked key", field="Authorization", headers=_CHALLENGE)
        ctx.principal, ctx.auth_via = record, "bearer"
        return record
    session_id = session.get(SESSION_KEY) if req.cookies else None
    if session_id:
        key_id = session_key_id()
        if key_id is None:  # the cookie stays as it is: asking again must give the same answer
            raise ApiError(401, "unauthorized", "the console session ended; sign in again", headers=_CHALLENGE)
        record = services().keys.get(key_id)
        if record is None:
            session.clear()
            raise ApiError(401, "unauthorized", "the session's key was revoked; sign in again", headers=_CHALLENGE)
        if req.method not in SAFE_METHODS:
            expected = session.get(CSRF_SESSION_KEY) or ""
            presented = req.headers.get(CSRF_HEADER, "")
            if not expected or not hmac.compare_digest(expected.encode(), presented.encode()):
                raise ApiError(403, "csrf", f"a state-changing request signed in by cookie needs the {CSRF_HEADER} "
                               "header from the console", field=CSRF_HEADER)
        ctx.principal, ctx.auth_via = record, "session"
        return record
    ctx.principal = None
    return None


def current() -> KeyRecord:
    """The authenticated principal; only valid inside a route guarded by `requires`."""
    return g._get_current_object().principal


def requires(*roles: str) -> Callable:
    """Guard a route: 401 without a valid credential, 403 when its role is not one of `roles` (admin always is)."""
    allowed = frozenset(roles) | {"admin"}

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            principal = authenticate()
            if principal is None:
                raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer <key>",
                               field="Authorization", headers=_CHALLENGE)
            if principal.role not in allowed:
                raise ApiError(403, "forbidden", f"a {principal.role} key cannot do this (needs "
                               f"{' or '.join(sorted(allowed))})")
            return view(*args, **kwargs)

        guarded.required_roles = allowed  # read by the OpenAPI document
        return guarded

    return decorate


def site_scope(principal: KeyRecord, requested_site: str | None = None, *, field: str = "site") -> str | None:
    """The site a request may act on: the key's own site, or the requested one for a token spanning all sites.

    None means "every site" (only for an unscoped moderator/admin that asked for no site). A key bound to a site
    asking for another one gets 403.
    """
    requested = normalise_site(requested_site, field) if requested_site else None
    if principal.site:
        if requested is not None and requested != principal.site:
            raise ApiError(403, "forbidden_site", "this key may only act on its own site", field=field)
        return principal.site
    return requested


def sign_in(record: KeyRecord, lifetime_seconds: int = SESSION_SECONDS) -> str:
    """Start a console session for a key (the console checked the token); returns the CSRF token to embed.

    The cookie carries only a random session id; the session itself lives in Redis, so signing out ends it
    everywhere, even for a copy of the cookie.
    """
    session.clear()
    session_id = secrets.token_urlsafe(32)
    services().redis.set(rediskeys.CONSOLE_SESSION.format(id=session_id), record.id, ex=lifetime_seconds)
    session[SESSION_KEY] = session_id
    session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return session[CSRF_SESSION_KEY]


def session_key_id() -> str | None:
    """The key id the request's console session signed in with; None without a session or when it has ended."""
    session_id = session.get(SESSION_KEY)
    if not isinstance(session_id, str):
        return None
    key_id = services().redis.get(rediskeys.CONSOLE_SESSION.format(id=session_id))
    return None if key_id is None else key_id.decode()


def sign_out() -> None:
    session_id = session.get(SESSION_KEY)
    session.clear()
    if session_id:
        services().redis.delete(rediskeys.CONSOLE_SESSION.format(id=session_id))


def csrf_token() -> str:
    """The session's CSRF token, for the console's pages and its fetch() calls (header X-CSRF-Token)."""
    token = session.get(CSRF_SESSION_KEY)
    if not token:
        token = session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def init_app(app: Flask) -> None:
    # The limiter (service/limits.py) buckets by key id and asks for the principal through this hook.
    app.extensions["winnow.authenticate"] = authenticate
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
