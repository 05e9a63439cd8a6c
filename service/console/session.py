"""How the console's session cookie is sent, and the sign-in form's own CSRF token.

The session itself (key id + CSRF token, re-checked on every request) is service.auth's; this module only makes
its cookie HttpOnly, SameSite=Strict, limited in lifetime, and Secure when the deployment says so or the request
itself came over https.
"""
from __future__ import annotations

import datetime as _dt
import hmac
import logging
import secrets
import time

from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import BadSignature, SignatureExpired

log = logging.getLogger("winnow.console")

FORM_CSRF = "winnow_signin_csrf"  # before sign-in, so a third-party page cannot sign a victim into its own session
LIFETIME = _dt.timedelta(hours=12)


class _SessionInterface(SecureCookieSessionInterface):
    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # A request that sends no cookie at all (every API call made with a key) starts an empty session without
        # building the cookie's signing serializer; a request with cookies is read and verified as Flask does.
        if app.secret_key and not request.environ.get("HTTP_COOKIE"):
            return self.session_class()
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            return self.session_class(serializer.loads(value, max_age=max_age))
        except SignatureExpired:
            return self.session_class()  # an ended session: sign in again, nothing to report
        except BadSignature:
            _warn_bad_signature()
            return self.session_class()

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


_WARN_EVERY = 60.0  # seconds: one line for a browser that keeps sending the cookie, not one per request
_warned_at = 0.0


def _warn_bad_signature() -> None:
    # The user is simply sent to sign in again; without this line, behind a load balancer whose nodes hold
    # different secrets, moderators would loop back to the sign-in page with nothing in any log to say why.
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= _WARN_EVERY:
        _warned_at = now
        log.warning("a console session cookie did not verify: it was signed with another deployment secret (every "
                    "web node needs the same WINNOW_SECRET_KEY) or altered; its holder is asked to sign in again")


def init_app(app: Flask, *, secure: bool = False) -> None:
    app.config.update(
        SESSION_COOKIE_NAME="winnow_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_PATH="/",  # the page's scripts call /api/v1 with it
        PERMANENT_SESSION_LIFETIME=LIFETIME,
    )
    app.session_interface = _SessionInterface()


def form_csrf_token() -> str:
    token = session.get(FORM_CSRF)
    if not isinstance(token, str):
        token = session[FORM_CSRF] = secrets.token_urlsafe(32)
    return token


def form_csrf_ok(presented: str | None) -> bool:
    expected = session.get(FORM_CSRF)
    return isinstance(expected, str) and isinstance(presented, str) and hmac.compare_digest(expected, presented)
