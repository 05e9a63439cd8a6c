"""The moderator console under /moderate: server-rendered page shells plus ES modules that call the JSON API.

Pages carry no data in their HTML beyond the signed-in moderator's name; everything untrusted reaches the browser
as JSON and is rendered as text by the page's scripts. Every console response is sent with a strict CSP.
"""
from __future__ import annotations

from flask import Flask

from service.console import session
from service.console.data import api
from service.console.views import bp, page_error
from service.http import PAGE_ERRORS


def init_app(app: Flask, *, secure_cookies: bool = False) -> None:
    session.init_app(app, secure=secure_cookies)
    app.register_blueprint(bp)
    app.register_blueprint(api)
    app.extensions.setdefault(PAGE_ERRORS, []).append(page_error)
