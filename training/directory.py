"""Every key and every site's settings held in memory by each web process, refreshed in the background.

A check must not wait for Redis: not for its key, not for its site's settings. Each process reads all keys and all
site settings into memory, then polls one version every POLL_SECONDS; creating or revoking a key and changing a site's
settings change it, and the process reads everything again (and every FULL_SECONDS in any case, for changes made by
hand). So a change reaches every process within about a second, and while Redis is away, or hangs, every key and
every setting known before keeps working in every process: a shadow-mode site is never answered with the defaults.
A key newer than the last read is looked up in Redis (training.apikeys.KeyStore keeps that path).
"""
from __future__ import annotations

import logging
import secrets
import threading
import time

import redis

from training import rediskeys
from training.threads import ProcessThread

log = logging.getLogger("winnow.directory")

POLL_SECONDS = 1.0
FULL_SECONDS = 60.0


def read_hashes(client: redis.Redis, names: list[str], chunk: int = 1000) -> list[dict[bytes, bytes]]:
    """HGETALL of each named hash, a round trip per `chunk` of them ({} for a hash that is gone)."""
    out: list[dict[bytes, bytes]] = []
    for start in range(0, len(names), chunk):
        pipe = client.pipeline(transaction=False)
        for name in names[start:start + chunk]:
            pipe.hgetall(name)
        out.extend(pipe.execute())
    return out


def bump(pipe) -> None:
    """Mark a change of keys or site settings, on the pipeline that makes it: a new random version, so a Redis
    that lost its data (and the version with it) never repeats the one a process last read."""
    pipe.set(rediskeys.DIRECTORY_VERSION, secrets.token_hex(8))


class Directory:
    """The background reader of a KeyStore's and a SiteStore's snapshots: started when a web worker boots
    (service/ops.worker_booted, which also reads once before the worker answers anything), or on first use."""

    def __init__(self, client: redis.Redis, keys, sites, *, poll_seconds: float = POLL_SECONDS,
                 full_seconds: float = FULL_SECONDS):
        self.redis = client
        self.keys = keys
        self.sites = sites
        self.poll_seconds = poll_seconds
        self.full_seconds = full_seconds
        self._version: bytes | None = None
        self._read_at: float | None = None  # monotonic time of the last full read; None before the first
        self._thread = ProcessThread(self._run, "winnow-directory", on_start=lambda forked: self._stop.clear())
        self._stop = threading.Event()
        keys.directory = sites.directory = self

    def ensure_running(self) -> None:
        self._thread.ensure()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread.forget()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def refresh(self) -> bool:
        """Read everything again if the version changed (or the last read is old, or there was none); True when it
        did. Sites a check asked about that the last read did not know are looked up too. Raises for Redis errors,
        keeping the snapshot it had."""
        if self.sites.index_missed():
            self._version = None  # found settings no index named: read everything again below
        version = self.redis.get(rediskeys.DIRECTORY_VERSION)
        if (self._read_at is not None and version == self._version
                and time.monotonic() - self._read_at < self.full_seconds):
            return False
        started = time.monotonic()
        self.keys.load_all()
        self.sites.load_all()
        self._version, self._read_at = version, started
        return True

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.refresh()
                if failing:
                    log.warning("keys and site settings read again after a Redis outage")
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("keys and site settings kept as last read; Redis: %s", exc)
                failing = True
            except Exception:  # the snapshot must keep being refreshed whatever happens once
                log.exception("reading keys and site settings failed")
            self._stop.wait(self.poll_seconds)
