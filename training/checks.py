"""Checked comments with their verdicts (kept `retention_days`, via key TTL) and the moderation queue.

Records are written behind the request by `WriteBehind`: scoring never waits for Redis, and while Redis is down
records wait in a bounded buffer. Checks are re-sendable by the platform, so a full buffer drops (and counts)
rather than blocking — unlike labels, which are never acknowledged before Redis has them.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable

import redis

from training import activity, pages, rediskeys
from training.schema import Comment

log = logging.getLogger("winnow.checks")

VERDICTS = ("ham", "unsure", "spam")
ALL_SITES = "*"


@dataclasses.dataclass(frozen=True, slots=True)
class CheckRecord:
    id: str
    site: str
    comment: Comment
    verdict: str  # the model's verdict under the site's thresholds (what the moderator reviews)
    answered: str  # what the platform was told (ham under shadow mode or for a trusted role)
    score: float
    discard: bool
    model_version: str
    created_at: float
    reasons: tuple = ()
    shadow: bool = False
    trusted: bool = False
    is_test: bool = False
    source: str = "api"
    key_id: str = ""
    refs: tuple = ()  # the platform's own identifiers for the comment, as (name, value) pairs

    @property
    def queued(self) -> bool:
        """Only real, untrusted checks wait for a moderator: test checks never become training data."""
        return not self.is_test and not self.trusted

    def to_hash(self) -> dict[str, str]:
        return {
            "id": self.id, "site": self.site, "comment": json.dumps(self.comment.to_dict(), ensure_ascii=False),
            "verdict": self.verdict, "answered": self.answered, "score": repr(self.score),
            "discard": "1" if self.discard else "0", "model_version": self.model_version,
            "created_at": repr(self.created_at), "reasons": json.dumps(list(self.reasons)),
            "shadow": "1" if self.shadow else "0", "trusted": "1" if self.trusted else "0",
            "is_test": "1" if self.is_test else "0", "source": self.source, "key_id": self.key_id,
            "refs": json.dumps(dict(self.refs)),
        }

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> "CheckRecord":
        d = {k.decode(): v.decode() for k, v in h.items()}
        return cls(
            id=d["id"], site=d["site"], comment=stored_comment(d["comment"]),
            verdict=d["verdict"], answered=d.get("answered", d["verdict"]), score=float(d["score"]),
            discard=d.get("discard") == "1", model_version=d.get("model_version", ""),
            created_at=float(d["created_at"]), reasons=tuple(json.loads(d.get("reasons", "[]"))),
            shadow=d.get("shadow") == "1", trusted=d.get("trusted") == "1", is_test=d.get("is_test") == "1",
            source=d.get("source", "api"), key_id=d.get("key_id", ""),
            refs=tuple(json.loads(d.get("refs", "{}")).items()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "site": self.site, "comment": self.comment.to_dict(), "verdict": self.verdict,
            "answered": self.answered, "score": self.score, "discard": self.discard,
            "model_version": self.model_version, "created_at": self.created_at, "reasons": list(self.reasons),
            "shadow": self.shadow, "trusted": self.trusted, "is_test": self.is_test, "source": self.source,
            "refs": dict(self.refs),
        }


_COMMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(Comment))


def stored_comment(text: str) -> Comment:
    """A comment read back from Redis. It was validated when it came in; validating again would turn a later,
    stricter schema into errors on reading old records, so unknown keys are dropped and values taken as stored."""
    data = json.loads(text)
    return Comment(**{k: v for k, v in data.items() if k in _COMMENT_FIELDS})


def uncertainty(score: float) -> float:
    """Queue order: distance of the calibrated spam probability from 0.5, where the model knows least.

    It does not depend on a site's thresholds, so changing them never reorders stored queues.
    """
    return abs(score - 0.5)


def queue_keys(site: str, verdict: str) -> list[str]:
    """Every queue index a check of this site and verdict sits in (per site and across sites)."""
    return [rediskeys.QUEUE.format(verdict=v, site=s) for s in (site, ALL_SITES) for v in ("all", verdict)]


def enqueue(pipe, record: CheckRecord) -> None:
    """Put a check in the moderation queue (inside the caller's pipeline) unless it is a test or trusted check."""
    if not record.queued:
        return
    rank = uncertainty(record.score)
    for qkey in queue_keys(record.site, record.verdict):
        pipe.zadd(qkey, {record.id: rank})
    pipe.zadd(rediskeys.QUEUE_BY_TIME, {record.id: record.created_at})


class CheckStore:
    def __init__(self, client: redis.Redis, *, retention_days: int = 30):
        self.redis = client
        self.retention_seconds = max(1, int(retention_days * 86400))

    def write(self, records: Iterable[CheckRecord]) -> int:
        """Store records in one round trip; the key TTL is what enforces retention."""
        pipe = self.redis.pipeline(transaction=False)
        n = 0
        for r in records:
            key = rediskeys.CHECK.format(id=r.id)
            pipe.hset(key, mapping=r.to_hash())
            pipe.expire(key, self.retention_seconds)
            activity.count_check(pipe, site=r.site, verdict=r.verdict, created_at=r.created_at)
            enqueue(pipe, r)
            n += 1
        if n:
            pipe.execute()
        return n

    def get(self, check_id: str) -> CheckRecord | None:
        if not check_id or len(check_id) > 64:
            return None
        h = self.redis.hgetall(rediskeys.CHECK.format(id=check_id))
        return CheckRecord.from_hash(h) if h else None

    def queue(self, *, site: str | None = None, verdict: str | None = None, limit: int = 50,
              cursor: str | None = None) -> tuple[list[CheckRecord], str | None]:
        """Unlabelled checks, most uncertain first; ids whose check expired are dropped from the queue on the way."""
        key = rediskeys.QUEUE.format(verdict=verdict or "all", site=site or ALL_SITES)
        out: list[CheckRecord] = []
        while True:
            rows, next_cursor = pages.page(self.redis, key, limit=limit - len(out), cursor=cursor)
            pipe = self.redis.pipeline(transaction=False)
            for member, _ in rows:
                pipe.hgetall(rediskeys.CHECK.format(id=member))
            expired = []
            for (member, _), h in zip(rows, pipe.execute() if rows else []):
                if h:
                    out.append(CheckRecord.from_hash(h))
                else:
                    expired.append(member)
            if expired:
                self.redis.zrem(key, *expired)
            if not expired or next_cursor is None or len(out) >= limit:
                return out, next_cursor
            cursor = next_cursor

    def queue_size(self, *, site: str | None = None, verdict: str | None = None) -> int:
        return self.redis.zcard(rediskeys.QUEUE.format(verdict=verdict or "all", site=site or ALL_SITES))

    def trim(self, now: float | None = None, batch: int = 1000) -> int:
        """Remove ids of checks past retention from every queue index; returns how many."""
        cutoff = (now or time.time()) - self.retention_seconds
        ids = [m.decode() for m in self.redis.zrangebyscore(rediskeys.QUEUE_BY_TIME, "-inf", cutoff, 0, batch)]
        if not ids:
            return 0
        # The check hashes are gone (same TTL), so their site and verdict are unknown: sweep every index.
        qkeys = [k.decode() for k in self.redis.scan_iter(match=rediskeys.QUEUE.format(verdict="*", site="*"),
                                                           count=500)]
        pipe = self.redis.pipeline(transaction=False)
        for qkey in qkeys:
            pipe.zrem(qkey, *ids)
        pipe.zrem(rediskeys.QUEUE_BY_TIME, *ids)
        pipe.execute()
        return len(ids)


class WriteBehind:
    """A bounded in-memory buffer of check records and a daemon thread that pipelines them into Redis.

    The thread starts lazily in the process that first submits, so a gunicorn worker forked after the app was
    built still gets its own writer. It wakes every `interval` seconds (or when a full batch is waiting) rather
    than per check, so a busy worker writes in batches and an idle one costs nothing. On a Redis error the batch
    goes back to the front and is retried with backoff.
    """

    def __init__(self, store: CheckStore, *, max_items: int = 10000, batch_size: int = 500, interval: float = 0.05,
                 on_drop: Callable[[int], None] | None = None, on_size: Callable[[int], None] | None = None):
        self.store = store
        self.max_items = max_items
        self.batch_size = batch_size
        self.interval = interval
        self.on_drop = on_drop or (lambda n: None)
        self.on_size = on_size or (lambda n: None)
        self.dropped = 0
        self._buffer: collections.deque[CheckRecord] = collections.deque()
        self._pending: dict[str, CheckRecord] = {}  # buffered or being written, by id
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._idle = True

    def submit(self, record: CheckRecord) -> bool:
        """Queue a record for storage; False (and counted) when the buffer is full."""
        self._ensure_thread()
        with self._cond:
            if len(self._pending) >= self.max_items:
                self.dropped += 1
                dropped = True
            else:
                self._buffer.append(record)
                self._pending[record.id] = record
                if len(self._buffer) >= self.batch_size:
                    self._cond.notify()
                dropped = False
        if dropped:
            self.on_drop(1)
        return not dropped

    def pending(self, check_id: str) -> CheckRecord | None:
        """A record not yet in Redis, so a label arriving right after its check still finds it."""
        return self._pending.get(check_id)

    def size(self) -> int:
        return len(self._pending)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is in Redis; False on timeout (e.g. Redis is down)."""
        self._ensure_thread()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def stop(self, timeout: float = 2.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._cond:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            if self._pid != os.getpid():  # forked: the parent's buffered records are the parent's to write
                self._buffer.clear()
                self._pending.clear()
            self._pid = os.getpid()
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="winnow-check-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        backoff = 0.0
        last_trim = 0.0
        while True:
            with self._cond:
                if len(self._buffer) < self.batch_size and not self._stopping:
                    self._cond.wait(self.interval)
                if self._stopping and not self._buffer:
                    return
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            self.on_size(self.size())
            if not batch:
                continue
            try:
                self.store.write(batch)
            except redis.RedisError as exc:
                if not backoff:
                    log.warning("check store unavailable, keeping records in memory: %s", exc)
                backoff = min(1.0, backoff * 2 or 0.05)
                with self._cond:
                    self._buffer.extendleft(reversed(batch))
                    if self._stopping:  # shutting down with Redis away: the platform can resend these checks
                        return
                    self._cond.wait(backoff)
                continue
            if backoff:
                log.warning("check store back, writing %d buffered records", self.size())
            backoff = 0.0
            with self._cond:
                for r in batch:
                    if self._pending.get(r.id) is r:
                        del self._pending[r.id]
                self._cond.notify_all()
            self.on_size(self.size())
            now = time.monotonic()
            if now - last_trim > 60:
                last_trim = now
                try:
                    self.store.trim()
                except redis.RedisError:
                    pass
