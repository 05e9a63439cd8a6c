"""Console routes: sign-in and sign-out, the four page shells, and the few JSON views the API has no call for."""
from __future__ import annotations

import hmac
import logging
import re

import redis
from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from service import auth
from service.console import session as console_session
from service.checking import StoreUnavailable
from service.context import services

log = logging.getLogger("winnow.console")

bp = Blueprint("console", __name__, url_prefix="/moderate", template_folder="templates", static_folder="static")

# Hidden and bidi control characters, as static/js/dom.js marks them: a key named "evil\u202e" must not read "live".
_HIDDEN_CHARS = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\u061c\ufeff]")


@bp.app_template_filter("visible")
def visible(text) -> str:
    """Text with each hidden or bidi control character shown as a [U+202E]-style marker (then escaped as usual)."""
    return _HIDDEN_CHARS.sub(lambda m: f"[U+{ord(m.group(0)):04X}]", str(text or ""))

ROLES = ("moderator", "admin")
PAGES = {"queue": "Queue", "labels": "Labels", "models": "Models", "activity": "Activity"}
API_BASE = "/api/v1"

# No inline script or style, no plugins, no framing, no <base>: injected markup, were any to slip through, could
# neither run nor restyle the page nor phone home.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@bp.after_request
def security_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def current_moderator():
    """The signed-in moderator's live key record, or None (no session, key revoked, or not a moderator key)."""
    key_id = auth.session_key_id()
    if key_id is None:
        return None
    record = services().keys.get(key_id)
    if record is None or record.role not in ROLES:
        auth.sign_out()
        return None
    return record


@bp.get("/")
def index():
    return redirect(url_for("console.page", name="queue"))


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    error = None
    status = 200
    if request.method == "POST":
        token = (request.form.get("token") or "").strip()
        if not console_session.form_csrf_ok(request.form.get("csrf")):
            error, status = "The form expired; please sign in again.", 400
        elif not token:
            error, status = "Enter your moderator token.", 400
        else:
            record = services().keys.authenticate(token)
            if record is None:
                error, status = "That token is not valid (unknown or revoked).", 401
            elif record.role not in ROLES:
                error, status = "That is a site key; the console needs a moderator or admin token.", 403
            else:
                # A fresh session: nothing set before sign-in survives it.
                auth.sign_in(record, int(console_session.LIFETIME.total_seconds()))
                session.permanent = True
                return redirect(_next_page(request.form.get("next")), code=303)
    elif current_moderator() is not None:
        return redirect(_next_page(request.args.get("next")))
    return render_template("console/signin.html", title="Sign in", error=error,
                           csrf=console_session.form_csrf_token(),
                           next=_page_name(request.values.get("next")) or ""), status


@bp.post("/sign-out")
def sign_out():
    expected = session.get(auth.CSRF_SESSION_KEY)
    if expected and not _same(expected, request.form.get("csrf")):
        abort(400, "missing or wrong CSRF token")
    auth.sign_out()
    return redirect(url_for("console.sign_in"), code=303)


@bp.get("/<name>")
def page(name: str):
    if name not in PAGES:
        abort(404)
    moderator = current_moderator()
    if moderator is None:
        return redirect(url_for("console.sign_in", next=name))
    return render_template(f"console/{name}.html", page=name, pages=PAGES, title=PAGES[name], moderator=moderator,
                           csrf=auth.csrf_token(), api=API_BASE)


_PAGE_ERRORS = {400: ("This form has expired", "The page was open too long or you signed in again elsewhere: go "
                                                 "back to the console and try again."),
                404: ("No such page", "The console has no page at this address.")}


def page_error(exc: HTTPException):
    """An error on a console page (not its JSON API, not its static files), routing errors included: a person's
    browser asked, so an HTML page with a way back rather than the JSON API's error. None for any other path."""
    path = request.path
    if not (path == bp.url_prefix or path.startswith(bp.url_prefix + "/")) \
            or path.startswith((bp.url_prefix + "/api/", bp.url_prefix + "/static/")):
        return None
    heading, message = _PAGE_ERRORS.get(exc.code or 500, (exc.name, exc.description or exc.name))
    headers = {h: v for h, v in exc.get_response().headers.items() if h in ("Allow", "Retry-After")}
    return render_template("console/error.html", title=heading, heading=heading, message=message), \
        exc.code or 500, headers


@bp.errorhandler(redis.RedisError)
@bp.errorhandler(StoreUnavailable)
def store_down(exc: Exception):
    """A page asked for while Redis is away (sessions live there): a page that says so, not a JSON error."""
    log.warning("console page %s unavailable: %s", request.path, exc)
    return render_template("console/unavailable.html", title="Unavailable"), 503, {"Retry-After": "5"}


def _same(expected: str, presented: str | None) -> bool:
    return isinstance(presented, str) and hmac.compare_digest(expected.encode(), presented.encode())


def _page_name(value: str | None) -> str | None:
    return value if value in PAGES else None


def _next_page(value: str | None) -> str:
    # Only the console's own pages: a crafted ?next= must not turn sign-in into an open redirect.
    return url_for("console.page", name=_page_name(value) or "queue")
