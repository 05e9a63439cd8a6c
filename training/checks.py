"""Checked comments with their verdicts (kept `retention_days`, via key TTL) and the moderation queue.

Records are written behind the request by `WriteBehind`: scoring never waits for Redis, and while Redis is down
records wait in a bounded buffer. Checks are re-sendable by the platform, so a full buffer drops (and counts)
rather than blocking — unlike labels, which are never acknowledged before Redis has them.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import secrets
import threading
import time
from typing import Any, Callable, Iterable

import orjson
import redis

from training import activity, pages, rediskeys
from training.threads import ProcessThread
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

    def to_json(self) -> bytes:
        """The whole record as one JSON document: what the check's hash keeps in its `record` field."""
        d = self.to_dict()
        d["key_id"] = self.key_id
        return orjson.dumps(d)

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> "CheckRecord":
        """A stored check: the `record` JSON document, or one hash field per attribute as older versions wrote."""
        packed = h.get(b"record")
        if packed is not None:
            d = orjson.loads(packed)
            return cls(
                id=d["id"], site=d["site"], comment=_comment_from(d["comment"]), verdict=d["verdict"],
                answered=d.get("answered", d["verdict"]), score=float(d["score"]), discard=bool(d.get("discard")),
                model_version=d.get("model_version", ""), created_at=float(d["created_at"]),
                reasons=tuple(d.get("reasons", ())), shadow=bool(d.get("shadow")), trusted=bool(d.get("trusted")),
                is_test=bool(d.get("is_test")), source=d.get("source", "api"), key_id=d.get("key_id", ""),
                refs=tuple((d.get("refs") or {}).items()),
            )
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


def stored_comment(text: str | bytes) -> Comment:
    """A comment read back from Redis. It was validated when it came in; validating again would turn a later,
    stricter schema into errors on reading old records, so unknown keys are dropped and values taken as stored."""
    return _comment_from(json.loads(text))


def _comment_from(data: dict[str, Any]) -> Comment:
    return Comment(**{k: v for k, v in data.items() if k in _COMMENT_FIELDS})


def uncertainty(score: float) -> float:
    """Queue order: distance of the calibrated spam probability from 0.5, where the model knows least.

    It does not depend on a site's thresholds, so changing them never reorders stored queues.
    """
    return abs(score - 0.5)


assert rediskeys.CHECK.endswith("{id}")
_CHECK_KEY_PREFIX = rediskeys.CHECK[: -len("{id}")]
QUEUE_READ_SECONDS = 0.5  # at most this long dropping expired ids in one queue read; then a short page
TRIM_SECONDS = 1.0  # one trim's time budget
TRIM_EVERY = 60.0  # seconds between one web process's trims (one process trims at a time; the others skip)

# Releases the trim lock only while it is still this process's (its TTL may have passed and another taken it).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def queue_keys(site: str, verdict: str) -> list[str]:
    """Every queue index a check of this site and verdict sits in (per site and across sites)."""
    return [rediskeys.QUEUE.format(verdict=v, site=s) for s in (site, ALL_SITES) for v in ("all", verdict)]


def same_comment_key(record: CheckRecord) -> str:
    """What makes two checks one comment for the queue: the site, the author's name, e-mail and address, the post
    and the content. A platform checks a comment again (the WordPress plugin's "Check for Spam" button rechecks
    every pending comment) and a moderator should see it once, at its newest check."""
    return comment_key(record.site, record.comment)


def comment_key(site: str, c: Comment) -> str:
    return rediskeys.SAME_COMMENT.format(digest=comment_digest(site, c))


def settled_key(record: CheckRecord) -> str:
    """The set of a comment's checks that were given a label: while one of those labels stands, the comment is
    settled and a new check of it is not queued."""
    return rediskeys.SETTLED.format(digest=comment_digest(record.site, record.comment))


def comment_digest(site: str, c: Comment) -> str:
    return hashlib.blake2b(orjson.dumps([site, c.author, c.author_email, c.user_ip, c.permalink, c.content]),
                           digest_size=16).hexdigest()


# Keep each comment queued once, at its newest check. KEYS: the comments' keys, then their settled sets (as many).
# ARGV: the retention seconds, the label key prefix, the queue key prefix, the all-sites name, the queue-by-time key,
# then per comment a check id and its site. Ids begin with their creation time in hex, so the greater id is the newer
# check, whatever order batches reach Redis in (a buffer flushed after an outage, another web process): the comment's
# key names the newest and the older check leaves the queue. A comment that a label on one of its checks settles is
# not queued when it is checked again (and stays settled for another retention period, however long the platform
# keeps rechecking it), and a check that carries a label itself (a write retried after the label) leaves.
_NEWEST = """
local ttl, label_prefix, queue_prefix, all_sites, by_time = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local verdicts = {'all', 'ham', 'unsure', 'spam'}
local function unqueue(id, site)
  for _, s in ipairs({site, all_sites}) do
    for _, v in ipairs(verdicts) do redis.call('ZREM', queue_prefix .. v .. ':' .. s, id) end
  end
  redis.call('ZREM', by_time, id)
end
local n = #KEYS / 2
for i = 1, n do
  local id, site = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  local current = redis.call('GET', KEYS[i])
  if current and current ~= id and redis.call('EXISTS', label_prefix .. current) == 1 then
    -- a labelled newest check settles the comment (also as deployments wrote it before the settled sets)
    redis.call('SADD', KEYS[n + i], current)
  end
  if (not current) or current < id then
    redis.call('SET', KEYS[i], id, 'EX', ttl)
    if current then unqueue(current, site) end
  elseif current > id then
    unqueue(id, site)
  end
  if redis.call('EXISTS', label_prefix .. id) == 1 then
    unqueue(id, site)
  else
    for _, done in ipairs(redis.call('SMEMBERS', KEYS[n + i])) do
      if redis.call('EXISTS', label_prefix .. done) == 1 then
        unqueue(id, site)
        redis.call('EXPIRE', KEYS[n + i], ttl)
        break
      end
    end
  end
end
return n
"""
assert rediskeys.QUEUE.endswith("{verdict}:{site}") and rediskeys.LABEL.endswith("{id}")  # as the script builds them
_NEWEST_ARGS = (rediskeys.LABEL.format(id=""), rediskeys.QUEUE.split("{verdict}")[0], ALL_SITES,
                rediskeys.QUEUE_BY_TIME)


# A label on a check settles its comment. KEYS: the check's label, the comment's key, its settled set, the site's
# queue indexes, the queue-by-time key. ARGV: the labelled check's id, the retention seconds. Only while the label
# stands (an undo that landed in between leaves the comment as it found it): the check joins the settled set, and
# the comment's newest check, when that is another one, leaves the queue.
_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[2])
local current = redis.call('GET', KEYS[2])
if current and current ~= ARGV[1] then
  for i = 4, #KEYS do redis.call('ZREM', KEYS[i], current) end
end
return 1
"""

# Store a batch of checks. KEYS: the checks' hashes. ARGV: retention seconds, then per check its created_at and its
# record JSON. (created_at is a field of its own: an undone label reads it to requeue the check.)
# Drop queue members whose check hash is gone (expired), atomically with looking: a check written meanwhile stays.
# KEYS: the queue index. ARGV: the check key prefix, then the ids read without a hash.
_DROP_EXPIRED = """
local dropped = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    dropped = dropped + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return dropped
"""

_PUT = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'created_at', ARGV[2 * i], 'record', ARGV[2 * i + 1])
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #KEYS
"""


class _Counters:
    """Stands in for a pipeline while `activity` counts a batch: the same counter bumped by many records of one
    batch becomes one HINCRBY by their number, and each day's key gets one EXPIRE."""

    def __init__(self) -> None:
        self.times = 1
        self.increments: dict[tuple[str, str], int] = {}
        self.expiries: dict[str, int] = {}

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self.increments[(key, field)] = self.increments.get((key, field), 0) + amount * self.times

    def expire(self, key: str, seconds: int) -> None:
        self.expiries[key] = seconds

    def emit(self, pipe) -> None:
        for (key, field), amount in self.increments.items():
            pipe.hincrby(key, field, amount)
        for key, seconds in self.expiries.items():
            pipe.expire(key, seconds)


class CheckStore:
    def __init__(self, client: redis.Redis, *, retention_days: int = 30):
        self.redis = client
        self.retention_seconds = max(1, int(retention_days * 86400))
        self._put = client.register_script(_PUT)
        self._newest = client.register_script(_NEWEST)
        self._drop_expired = client.register_script(_DROP_EXPIRED)
        self._release_trim = client.register_script(_RELEASE)
        self._settle = client.register_script(_SETTLE)

    def write(self, records: Iterable[CheckRecord]) -> int:
        """Store records in one round trip; the key TTL is what enforces retention.

        Each record is one hash (`created_at` and the `record` JSON) with its expiry, all set by one script call;
        the batch's queue entries go in one ZADD per queue index and its activity counts in one HINCRBY per
        counter, and a second script call keeps each comment queued once, at its newest check (_NEWEST). A busy web
        process so spends a handful of Redis commands on a batch, not a dozen per check.
        """
        keys: list[str] = []
        args: list[Any] = [self.retention_seconds]
        queued: dict[tuple[str, str], list[str]] = {}  # (site, verdict) -> [rank, id, rank, id, ...]
        by_time: list[str] = []  # [created_at, id, ...]
        tally: dict[tuple[str, str, int], list] = {}  # (site, verdict, UTC day) -> [count, a time in that day]
        same: list[tuple[str, str, str, str]] = []  # per queued check: its comment's keys, its id and site
        for r in records:
            try:
                document = r.to_json()
            except (TypeError, ValueError) as exc:  # not storable (the API refuses such input): lose it alone
                log.error("check %s cannot be stored and is dropped: %s", r.id, exc)
                continue
            # Scores go to Redis as repr() strings, once each: the exact doubles, without a float-to-text per index.
            created = repr(r.created_at)
            keys.append(_CHECK_KEY_PREFIX + r.id)
            args.append(created)
            args.append(document)
            group = (r.site, r.verdict, int(r.created_at // 86400))
            seen = tally.get(group)
            if seen is None:
                tally[group] = [1, r.created_at]
            else:
                seen[0] += 1
            if r.queued:
                same.append((same_comment_key(r), settled_key(r), r.id, r.site))
                members = queued.get((r.site, r.verdict))
                if members is None:
                    members = queued[(r.site, r.verdict)] = []
                members.append(repr(uncertainty(r.score)))
                members.append(r.id)
                by_time.append(created)
                by_time.append(r.id)
        if not keys:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        # EVALSHA straight into the pipeline: a Script there would ask SCRIPT EXISTS first, a round trip per batch.
        pipe.evalsha(self._put.sha, len(keys), *keys, *args)
        indices: dict[str, list[str]] = {}
        for (site, verdict), members in queued.items():
            for qkey in queue_keys(site, verdict):
                indices.setdefault(qkey, []).extend(members)

        def enqueue(target) -> None:
            for qkey, members in indices.items():
                target.execute_command("ZADD", qkey, *members)
            if indices:  # named for the trim, which cannot learn an expired check's site and verdict
                target.execute_command("SADD", rediskeys.QUEUE_INDEXES, *indices)
            if by_time:
                target.execute_command("ZADD", rediskeys.QUEUE_BY_TIME, *by_time)

        enqueue(pipe)
        counters = _Counters()
        for (site, verdict, _), (count, created_at) in tally.items():
            counters.times = count
            activity.count_check(counters, site=site, verdict=verdict, created_at=created_at)
        counters.emit(pipe)
        newest_keys = [x[0] for x in same] + [x[1] for x in same]
        newest_args = [self.retention_seconds, *_NEWEST_ARGS, *(v for x in same for v in x[2:])]
        if same:
            pipe.evalsha(self._newest.sha, len(newest_keys), *newest_keys, *newest_args)
        results = pipe.execute(raise_on_error=False)
        failed = [x for x in results if isinstance(x, Exception)]
        if failed and all(isinstance(x, redis.exceptions.NoScriptError) for x in failed):
            # A Redis that restarted or flushed its scripts; the rest went through.
            self._put(keys=keys, args=args)
            # A queue read between the two may have taken these ids for expired checks (no hash yet) and dropped
            # them: put them back, now that the hashes exist, and only then keep each comment queued once.
            with self.redis.pipeline(transaction=False) as again:
                enqueue(again)
                again.execute()
            if same:
                self._newest(keys=newest_keys, args=newest_args)
        elif failed:
            raise failed[0]
        return len(keys)

    def get(self, check_id: str) -> CheckRecord | None:
        if not check_id or len(check_id) > 64:
            return None
        h = self.redis.hgetall(rediskeys.CHECK.format(id=check_id))
        return CheckRecord.from_hash(h) if h else None

    def queue(self, *, site: str | None = None, verdict: str | None = None, limit: int = 50,
              cursor: str | None = None) -> tuple[list[CheckRecord], str | None]:
        """Unlabelled checks, most uncertain first; ids whose check expired, or whose comment was checked again
        since (a write takes those out itself, but not one stored before it did), are dropped on the way.

        Ids the trim has not reached yet are dropped here, for at most QUEUE_READ_SECONDS: past that the page comes
        back short, with the cursor to go on from (the next read starts after what was dropped)."""
        key = rediskeys.QUEUE.format(verdict=verdict or "all", site=site or ALL_SITES)
        out: list[CheckRecord] = []
        deadline = time.monotonic() + QUEUE_READ_SECONDS
        while True:
            rows, next_cursor = pages.page(self.redis, key, limit=limit - len(out), cursor=cursor)
            pipe = self.redis.pipeline(transaction=False)
            for member, _ in rows:
                pipe.hgetall(rediskeys.CHECK.format(id=member))
            expired = []
            found = []
            for (member, _), h in zip(rows, pipe.execute() if rows else []):
                if h:
                    found.append(CheckRecord.from_hash(h))
                else:
                    expired.append(member)
            newest = self.redis.mget([same_comment_key(r) for r in found]) if found else []
            replaced = [r.id for r, n in zip(found, newest) if n is not None and n.decode() != r.id]
            out.extend(r for r, n in zip(found, newest) if n is None or n.decode() == r.id)
            if expired:
                # Only those still without a hash: one being written right now is not expired.
                self._drop_expired(keys=[key], args=[_CHECK_KEY_PREFIX, *expired])
            if replaced:  # for good: a comment's newest check only ever gets newer
                self.redis.zrem(key, *replaced)
            if not (expired or replaced) or next_cursor is None or len(out) >= limit \
                    or time.monotonic() > deadline:
                return out, next_cursor
            cursor = next_cursor

    def settle(self, record: CheckRecord) -> None:
        """A label on one check of a comment settles the comment (call it once the label is stored): its newest
        check, when that is another one, leaves the queue too (a platform reporting spam by the guid of the first
        check, after a recheck), and checking the comment again does not queue it again while the label stands."""
        qkeys = sorted({k for v in VERDICTS for k in queue_keys(record.site, v)})
        self._settle(keys=[rediskeys.LABEL.format(id=record.id), same_comment_key(record), settled_key(record), *qkeys,
                           rediskeys.QUEUE_BY_TIME], args=[record.id, self.retention_seconds])

    def newest_check_of(self, site: str, comment: Comment) -> CheckRecord | None:
        """The newest stored check of this comment (the same site, author, e-mail, address, post and content), if it
        was queued and is still kept: what a report that does not name its check is about."""
        newest = self.redis.get(comment_key(site, comment))
        return self.get(newest.decode()) if newest is not None else None

    def standing_labels_of(self, record: CheckRecord) -> list[str]:
        """Ids of the labels given to checks of this record's comment that still stand, newest first: a report
        about the comment changes the newest of them rather than adding another label of the same comment."""
        members = sorted((m.decode() for m in self.redis.smembers(settled_key(record))), reverse=True)
        if not members:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.exists(rediskeys.LABEL.format(id=m))
            return [m for m, standing in zip(members, pipe.execute()) if standing]

    def queue_size(self, *, site: str | None = None, verdict: str | None = None) -> int:
        return self.redis.zcard(rediskeys.QUEUE.format(verdict=verdict or "all", site=site or ALL_SITES))

    def trim(self, now: float | None = None, batch: int = 1000, seconds: float = TRIM_SECONDS) -> int:
        """Remove ids of checks past retention from every queue index, a batch at a time until none is left or
        `seconds` have passed; returns how many. One process at a time does it (a lock in Redis): the others skip.

        The check hashes are gone (same TTL), so an expired id's site and verdict are unknown: each batch leaves
        every queue index, named in QUEUE_INDEXES (the keyspace is scanned only once per deployment, to name the
        indexes written before that set existed). A batch costs one ZREM per index: sites × 4 + 4 of them."""
        token = secrets.token_hex(8)
        if not self.redis.set(rediskeys.QUEUE_TRIM, token, nx=True, ex=max(5, int(seconds * 4))):
            return 0
        try:
            qkeys: list[bytes] | None = None  # read once there is something to remove
            removed = 0
            deadline = time.monotonic() + seconds
            cutoff = (now or time.time()) - self.retention_seconds
            while True:
                ids = self.redis.zrangebyscore(rediskeys.QUEUE_BY_TIME, "-inf", cutoff, 0, batch)
                if not ids:
                    return removed
                if qkeys is None:
                    qkeys = self._queue_indexes()
                pipe = self.redis.pipeline(transaction=False)
                for qkey in qkeys:
                    pipe.zrem(qkey, *ids)
                pipe.zrem(rediskeys.QUEUE_BY_TIME, *ids)
                pipe.execute()
                removed += len(ids)
                if len(ids) < batch or time.monotonic() > deadline:
                    return removed
        finally:
            self._release_trim(keys=[rediskeys.QUEUE_TRIM], args=[token])

    def _queue_indexes(self) -> list[bytes]:
        if not self.redis.exists(rediskeys.QUEUE_INDEXED):
            # Queue indexes written before QUEUE_INDEXES existed: found once per deployment.
            found = list(self.redis.scan_iter(match=rediskeys.QUEUE.format(verdict="*", site="*"), count=1000))
            pipe = self.redis.pipeline(transaction=True)
            if found:
                pipe.sadd(rediskeys.QUEUE_INDEXES, *found)
            pipe.set(rediskeys.QUEUE_INDEXED, "1")
            pipe.execute()
        return sorted(self.redis.smembers(rediskeys.QUEUE_INDEXES))


# How often a web process writes its buffered checks. Each write is one pipeline (and, with appendfsync always, one
# disk flush in Redis) whatever the batch holds; a quarter of a second batches a busy process's checks by dozens
# (in alternating wrk runs, some 15 % more checks per second than every 50 ms), and a check is still stored long
# before a moderator could see it.
WRITE_INTERVAL = 0.25


class WriteBehind:
    """A bounded in-memory buffer of check records and a daemon thread that pipelines them into Redis.

    The thread starts lazily in the process that first submits, so a gunicorn worker forked after the app was
    built still gets its own writer. It wakes every `interval` seconds (or when a full batch is waiting) rather
    than per check, so a busy worker writes in batches and an idle one costs nothing. On a Redis error the batch
    goes back to the front and is retried with backoff.
    """

    def __init__(self, store: CheckStore, *, max_items: int = 10000, batch_size: int = 500,
                 interval: float = WRITE_INTERVAL,
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
        self._thread = ProcessThread(self._run, "winnow-check-writer", on_start=self._on_start)
        self._stopping = False
        self._idle = True

    def submit(self, record: CheckRecord) -> bool:
        """Queue a record for storage; False (and counted) when the buffer is full."""
        self._thread.ensure()
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
        self._thread.ensure()
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
        thread = self._thread.thread
        if thread is not None:
            thread.join(timeout)

    def _on_start(self, forked: bool) -> None:
        if forked:  # the parent's buffered records are the parent's to write
            self._cond = threading.Condition()
            self._buffer.clear()
            self._pending.clear()
        self._stopping = False

    def _trim_now_and_then(self, last: float) -> float:
        """Take expired checks out of the queue about once a minute (skipped while another process trims);
        returns when it last tried."""
        now = time.monotonic()
        if now - last < TRIM_EVERY:
            return last
        try:
            self.store.trim()
        except redis.RedisError:
            pass
        return now

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
                last_trim = self._trim_now_and_then(last_trim)  # idle too: checks expire all the same
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
            except Exception:  # a bug, not Redis: this batch is lost, but the thread lives and nothing waits on it
                log.exception("could not store %d checks; they are dropped", len(batch))
                self.dropped += len(batch)
                self.on_drop(len(batch))
            if backoff:
                log.warning("check store back, writing %d buffered records", self.size())
            backoff = 0.0
            with self._cond:
                for r in batch:
                    if self._pending.get(r.id) is r:
                        del self._pending[r.id]
                self._cond.notify_all()
            self.on_size(self.size())
            last_trim = self._trim_now_and_then(last_trim)
