"""The Flask app factory: settings, Redis, the served model, the stores, then each subsystem's init_app.

Each web process builds one app (gunicorn calls `create_app()` in every worker); nothing is shared between
processes but Redis. Tests pass their own settings, Redis client and model holder.
"""
from __future__ import annotations

import redis
from flask import Flask
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from werkzeug.middleware.proxy_fix import ProxyFix

from service import akismet, api, auth, console, http, limits, logs, metrics, models_api, ops
from service.context import EXTENSION, Services
from training.apikeys import KeyStore
from training.checks import CheckStore, WriteBehind
from training.directory import Directory
from training.labels import LabelStore
from training.settings import Settings
from training.sites import SiteStore


def create_app(settings: Settings | None = None, *, redis_client: redis.Redis | None = None,
               serving=None) -> Flask:
    logs.configure()  # first, so what loading the model says is a JSON line like the rest
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(SECRET_KEY=settings.secret_key, WINNOW_SETTINGS=settings,
                      MAX_CONTENT_LENGTH=http.MAX_BODY_BYTES)
    app.json.sort_keys = False  # fields in the order the API documents them, in every answer alike
    # "//" in a path is a 404 like any unknown path, not a redirect to a URL built from the request's Host header.
    app.url_map.merge_slashes = False  # before any route is added: each rule takes it when it is bound

    client = redis_client or connect(settings)
    serving = serving or _start_serving(client, settings)
    app.extensions[EXTENSION] = build_services(settings, client, serving)

    http.init_app(app)            # JSON errors for every face that does not speak its own protocol
    auth.init_app(app)            # Bearer keys and console sessions
    api.init_app(app)             # /api/v1 checks, labels, queue, site settings
    models_api.init_app(app)      # /api/v1 models, retrain and jobs: the learning loop
    akismet.init_app(app)         # /1.1/*, /1.2/*: the Akismet wire protocol
    limits.init_app(app)          # per-key rate limits in Redis (429 + Retry-After)
    ops.init_app(app)             # request ids and logs, /healthz, /readyz, /metrics, OpenAPI, /ping
    console.init_app(app, secure_cookies=settings.secure_cookies)  # /moderate: the moderator console
    if settings.proxy_hops > 0:  # client address and scheme as the trusted proxies saw them
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)
    return app


def connect(settings: Settings) -> redis.Redis:
    """A client that reconnects by itself: a Redis restart needs no web restart, and an outage fails fast.

    A dropped connection is retried twice (a restarted Redis answers the next attempt); a command that timed out is
    not: a Redis that hangs would only make the caller wait the timeout again, three times over for each command."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=0.5,
        socket_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2, supported_errors=(redis.ConnectionError,)),
        retry_on_error=[redis.ConnectionError],  # redis-py before 6 retries only what this names
        health_check_interval=15,
    )


def build_services(settings: Settings, client: redis.Redis, serving) -> Services:
    checks = CheckStore(client, retention_days=settings.retention_days)
    writer = WriteBehind(checks, max_items=settings.write_buffer_size,
                         on_drop=lambda n: metrics.WRITE_BUFFER_DROPPED.inc(n),
                         on_size=lambda n: metrics.WRITE_BUFFER_SIZE.set(n))
    keys = KeyStore(client, cache_seconds=settings.auth_cache_seconds)
    sites = SiteStore(client, settings, cache_seconds=settings.site_cache_seconds)
    Directory(client, keys, sites)  # every key and site setting in memory; a worker starts it at boot (ops)
    return Services(
        settings=settings, redis=client, serving=serving, keys=keys, sites=sites,
        checks=checks, writer=writer, labels=LabelStore(client),
    )


def _start_serving(client: redis.Redis, settings: Settings):
    from training.registry import ServingModel

    return ServingModel(client, settings).start()
