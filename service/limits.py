"""Per-key rate limits shared through Redis, so every web process of a deployment spends one budget.

A refused request gets 429 with Retry-After (what Akismet clients honour too) and a JSON body, or plain text on the
Akismet face. Counting never waits for Redis: with `appendfsync always` every Redis write waits for a disk flush
(milliseconds), so each process counts in memory and pushes its counts to Redis in the background every
FLUSH_SECONDS, learning the other processes' counts in the same round trip. A key may overshoot its limit by what
the deployment's processes accept in one flush interval. If Redis is down, counting goes on in memory and a check
never turns into a 500. Limits are written in the `limits` package's syntax ("600/minute"); the check itself is one
before-request hook, since a generic per-route limiter costs more per request than the scoring it guards.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time

import redis
from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, parse_many
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

from service.http import error_response
from training import rediskeys
from training.settings import Settings
from training.threads import ProcessThread

log = logging.getLogger("winnow.limits")

# Operations routes stay reachable for probes and scrapers whatever a key has spent.
EXEMPT_BLUEPRINTS = frozenset({"ops"})
PLAIN_TEXT_BLUEPRINTS = frozenset({"akismet"})
FLUSH_SECONDS = 0.05
_STORAGE_TIMEOUT = 0.5  # seconds; only the background flush ever waits on it

# Add this process's hits to the shared window; start the window's clock on its first hit; answer the shared
# count and the time left in the window.
_FLUSH_SCRIPT = """
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


@dataclasses.dataclass
class _Window:
    expires_at: float  # wall-clock seconds
    known: int = 0  # the shared count as of the last flush (including this process's flushed hits)
    pending: int = 0  # this process's hits not yet in Redis


class SharedCounterStorage(Storage):
    """Fixed-window counters counted in process and summed in Redis in the background (`winnow+redis://...`)."""

    STORAGE_SCHEME = ["winnow+redis", "winnow+rediss", "winnow+unix"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, flush_seconds: float = FLUSH_SECONDS,
                 **options) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.redis = redis.Redis.from_url(uri.split("+", 1)[1], **options)
        self._script = self.redis.register_script(_FLUSH_SCRIPT)
        self.flush_seconds = flush_seconds
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._flusher = ProcessThread(self._run, "winnow-rate-limit-flush", on_start=self._on_start)

    @property
    def base_exceptions(self) -> type[Exception]:
        return redis.RedisError

    # ---- the limits.Storage interface (fixed window) ----------------------------------------------------------
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self._flusher.ensure()
        now = time.time()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now >= window.expires_at:
                window = self._windows[key] = _Window(expires_at=now + expiry)
            window.pending += amount
            return window.known + window.pending

    def get(self, key: str) -> int:
        window = self._windows.get(key)
        if window is None or time.time() >= window.expires_at:
            return 0
        return window.known + window.pending

    def get_expiry(self, key: str) -> float:
        window = self._windows.get(key)
        return window.expires_at if window is not None else time.time()

    def check(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def reset(self) -> int | None:
        with self._lock:
            self._windows.clear()
        keys = list(self.redis.scan_iter(match=rediskeys.RATE_LIMIT.format(window="*"), count=1000))
        if keys:
            self.redis.delete(*keys)
        return len(keys)

    def clear(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)
        self.redis.delete(self._redis_key(key))

    # ---- background flush ---------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Push pending hits to Redis and learn every live window's shared count; on a Redis error hits stay pending."""
        now = time.time()
        with self._lock:
            for key in [k for k, w in self._windows.items() if now >= w.expires_at]:
                del self._windows[key]
            batch = [(key, window, window.pending) for key, window in self._windows.items()]
            for _, window, _ in batch:
                window.pending = 0
        if not batch:
            return
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for key, window, pending in batch:
                    if pending:
                        ttl_ms = max(1, int((window.expires_at - now) * 1000))
                        self._script(keys=[self._redis_key(key)], args=[ttl_ms, pending], client=pipe)
                    else:  # only reading: what the other processes spent since the last flush
                        pipe.get(self._redis_key(key))
                answers = pipe.execute()
        except redis.RedisError:
            with self._lock:
                for _, window, pending in batch:
                    window.pending += pending
            raise
        after = time.time()
        with self._lock:
            for (key, window, pending), answer in zip(batch, answers):
                if self._windows.get(key) is not window:
                    continue
                if pending:
                    shared, ttl_ms = answer
                    window.known = int(shared)
                    window.expires_at = after + int(ttl_ms) / 1000.0
                elif answer is not None:
                    window.known = max(window.known, int(answer))

    def _redis_key(self, key: str) -> str:
        return rediskeys.RATE_LIMIT.format(window=key)

    def _on_start(self, forked: bool) -> None:
        if forked:  # the parent's counts are the parent's to write
            self._lock = threading.Lock()
            self._windows = {}

    def _run(self) -> None:
        backoff = self.flush_seconds
        while True:
            time.sleep(backoff)
            try:
                self.flush()
                backoff = self.flush_seconds
            except redis.RedisError:
                backoff = min(2.0, backoff * 2)  # Redis is down: keep counting in memory, retry gently
            except Exception:  # the counter thread must outlive any surprise, or counts would stop being shared
                log.exception("rate-limit flush failed")
                backoff = min(2.0, backoff * 2)


def rate_key() -> str:
    """The bucket: the authenticated key's id, else the client address."""
    principal = g._get_current_object().get("principal")
    if principal is None:
        authenticate = current_app._get_current_object().extensions.get("winnow.authenticate")
        if authenticate is not None:
            try:
                principal = authenticate()
            except Exception:  # a refused or unreadable credential is auth's answer to give, not the limiter's
                principal = None
    key_id = getattr(principal, "id", None)
    if key_id:
        return "key:" + str(key_id)
    return "addr:" + (request.remote_addr or "unknown")


class RateLimiter:
    """One budget per key across every route (fixed windows), checked before each request."""

    def __init__(self, settings: Settings):
        self.items: list[RateLimitItem] = parse_many(settings.rate_limit)  # a bad setting fails at start
        self.storage = SharedCounterStorage("winnow+" + settings.redis_url, socket_timeout=_STORAGE_TIMEOUT,
                                            socket_connect_timeout=_STORAGE_TIMEOUT)
        self.strategy = FixedWindowRateLimiter(self.storage)

    def breached(self, key: str) -> RateLimitItem | None:
        """Count one hit for `key` against every limit; the first limit it exceeds, or None."""
        for item in self.items:
            if not self.strategy.hit(item, key):
                return item
        return None

    def before_request(self) -> Response | None:
        if request._get_current_object().blueprint in EXEMPT_BLUEPRINTS:
            return None
        key = rate_key()
        item = self.breached(key)
        return None if item is None else self._too_many(item, key)

    def _too_many(self, item: RateLimitItem, key: str) -> Response:
        # Whole seconds until the breached window resets.
        seconds = max(1, math.ceil(self.storage.get_expiry(item.key_for(key)) - time.time()))
        message = f"rate limit of {item} exceeded for this key; retry after {seconds} s"
        headers = [("Retry-After", str(seconds))]
        if request.blueprint in PLAIN_TEXT_BLUEPRINTS:
            # The Akismet protocol answers in text/plain without a trailing newline; its SDKs act on status and
            # Retry-After.
            return Response(message, status=429, mimetype="text/plain", headers=headers)
        return error_response(429, "rate_limited", message, headers=headers)


def init_app(app: Flask, settings: Settings | None = None) -> RateLimiter:
    settings = settings or app.config.get("WINNOW_SETTINGS") or Settings.from_env()
    limiter = RateLimiter(settings)
    app.before_request(limiter.before_request)
    app.extensions["winnow.limiter"] = limiter
    return limiter
