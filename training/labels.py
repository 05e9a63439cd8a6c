"""Labelled examples (the training data) and their audit trail, kept without expiry.

A label is written in one Redis transaction and acknowledged only after Redis accepted it: there is no
write-behind here, because a platform does not resend a moderator's decision. A relabel overrides the label and
appends (who, when, from, to) to the audit trail. Labels of `is_test` checks are never stored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Any, Iterator, Sequence

import numpy as np
import orjson
import redis

from training import activity, pages, rediskeys
from training.checks import (ALL_SITES, CheckRecord, comment_digest, comment_key, queue_keys, stored_comment,
                             uncertainty)
from training.schema import LABELS, Comment

log = logging.getLogger("winnow.labels")

MAX_BATCH = 1000

# Atomic put: compare with the current label, move the id between label indices, append the audit entry and take
# the id out of the moderation queue. The label is stamped with Redis's clock (unless ARGV[3] gives a time), so
# stamps follow the order labels land in whichever web process wrote them: a retrain that read every label up to
# some stamp has read every label that landed before it, and a label landing later is newer. Returns {previous
# label ("" when new), the stamp}; an unchanged label is a no-op that returns its stamp. With a condition that does
# not hold (ARGV[6]: "-" for "not labelled yet", or the label expected now; ARGV[7]: the stamp that label must
# still carry, so a label changed and changed back meanwhile is told apart), nothing is written and the answer is
# {current label or "", its stamp, "conflict", who labelled it}.
# KEYS: label hash, audit list, overturns, idx all/site, idx all/*, idx ham/site, idx ham/*, idx spam/site,
#       idx spam/*, then queue indices to leave.  ARGV: id, label, time ("" for Redis's clock), audit entry without
#       "at", "from" and its closing brace, overturn (1/0), condition label and stamp ("" for none), then the
#       hash's field/value pairs.
_PUT = """
local old = redis.call('HGET', KEYS[1], 'label')
if ARGV[6] ~= '' then
  local stamp = redis.call('HGET', KEYS[1], 'labelled_at')
  if (old or '-') ~= ARGV[6] or (ARGV[7] ~= '' and tonumber(stamp) ~= tonumber(ARGV[7])) then
    return {old or '', stamp or '', 'conflict', redis.call('HGET', KEYS[1], 'labelled_by') or ''}
  end
end
if old == ARGV[2] then return {old, redis.call('HGET', KEYS[1], 'labelled_at')} end
local now = ARGV[3]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('HSET', KEYS[1], 'labelled_at', now)
redis.call('HSETNX', KEYS[1], 'created_at', now)
local id = ARGV[1]
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZADD', KEYS[5], now, id)
local add, drop = 6, 8
if ARGV[2] == 'spam' then add, drop = 8, 6 end
redis.call('ZADD', KEYS[add], now, id)
redis.call('ZADD', KEYS[add + 1], now, id)
redis.call('ZREM', KEYS[drop], id)
redis.call('ZREM', KEYS[drop + 1], id)
local from = 'null'
if old then from = '"' .. old .. '"' end
redis.call('RPUSH', KEYS[2], ARGV[4] .. ',"at":' .. now .. ',"from":' .. from .. '}')
if ARGV[5] == '1' then redis.call('ZADD', KEYS[3], now, id) else redis.call('ZREM', KEYS[3], id) end
for i = 10, #KEYS do redis.call('ZREM', KEYS[i], id) end
return {old or '', now}
"""


# Atomic undo of a label: the hash and its index entries go, the audit trail gets a "to": null entry, and a label
# given to a check that is still stored puts the comment back into the moderation queue (at its newest check: see
# LabelStore._requeued). Returns the label taken back.
# KEYS: label hash, audit list, overturns, idx all/site, idx all/*, idx ham/site, idx ham/*, idx spam/site,
#       idx spam/*, then (when a check goes back in the queue) that check's hash, the set naming the queue indices,
#       its queue indices and the queue's time index.
# ARGV: id, audit entry without "at", "from" and its closing brace, queue rank, the label expected now, the
# stamp it must carry ("" for any), the id of the check that goes back in the queue, the label key prefix and the
# comment's settled set ("" for a label given with its content): the check stays out while another label of the
# comment stands, checked here, atomically with the undo. Stamped with Redis's clock, as puts. When the condition
# does not hold, nothing changes and the answer is {current label, who labelled it}.
_REMOVE = """
local old = redis.call('HGET', KEYS[1], 'label')
if not old then return false end
if ARGV[4] ~= '' and (old ~= ARGV[4] or (ARGV[5] ~= '' and
    tonumber(redis.call('HGET', KEYS[1], 'labelled_at')) ~= tonumber(ARGV[5]))) then
  return {old, redis.call('HGET', KEYS[1], 'labelled_by') or ''}
end
redis.call('DEL', KEYS[1])
for i = 3, 9 do redis.call('ZREM', KEYS[i], ARGV[1]) end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('RPUSH', KEYS[2], ARGV[2] .. ',"at":' .. now .. ',"from":"' .. old .. '"}')
if #KEYS > 10 then
  local created = redis.call('HGET', KEYS[10], 'created_at')
  -- Not while another label of the comment stands (a label on another of its checks settles it).
  if ARGV[6] ~= ARGV[1] and redis.call('EXISTS', ARGV[7] .. ARGV[6]) == 1 then created = false end
  if created and ARGV[8] ~= '' then
    for _, m in ipairs(redis.call('SMEMBERS', ARGV[8])) do
      if m ~= ARGV[1] and redis.call('EXISTS', ARGV[7] .. m) == 1 then created = false break end
    end
  end
  if created then
    for i = 12, #KEYS - 1 do
      redis.call('ZADD', KEYS[i], ARGV[3], ARGV[6])
      redis.call('SADD', KEYS[11], KEYS[i])
    end
    redis.call('ZADD', KEYS[#KEYS], created, ARGV[6])
  end
end
return old
"""

# Many label hashes' fields in one call: a reply of len(KEYS) * len(ARGV) values, nil for a missing field or a
# label removed meanwhile. One round trip and one reply per FETCH_CHUNK labels instead of one command each: reading a
# million labels for a retrain is a few seconds, not minutes. KEYS: label hashes.  ARGV: field names.
_FETCH = """
local out = {}
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, #ARGV do out[#out + 1] = v[j] end
end
return out
"""
FETCH_CHUNK = 1000  # labels per script call (Redis serves nothing else for the millisecond or two it runs)


@dataclasses.dataclass(frozen=True, slots=True)
class LabelRecord:
    id: str
    site: str
    label: str
    comment: Comment
    labelled_at: float
    labelled_by: str
    source: str = "api"
    check_id: str = ""
    verdict: str = ""  # the check's real verdict, when the label is about a check
    score: float | None = None
    created_at: float = 0.0  # when the comment was first labelled
    previous: str | None = None  # the label this write replaced (None when new); not stored

    @property
    def overturn(self) -> bool:
        """A moderator saying the model was wrong: a label that contradicts its check's ham/spam verdict."""
        return self.verdict in LABELS and self.verdict != self.label

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "site": self.site, "label": self.label, "comment": self.comment.to_dict(),
                "labelled_at": self.labelled_at, "labelled_by": self.labelled_by, "source": self.source,
                "check_id": self.check_id or None, "verdict": self.verdict or None, "score": self.score,
                "created_at": self.created_at or self.labelled_at}

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> "LabelRecord":
        d = {k.decode(): v.decode() for k, v in h.items()}
        return cls(id=d["id"], site=d["site"], label=d["label"], comment=stored_comment(d["comment"]),
                   labelled_at=float(d["labelled_at"]), labelled_by=d.get("labelled_by", ""),
                   source=d.get("source", "api"), check_id=d.get("check_id", ""), verdict=d.get("verdict", ""),
                   score=float(d["score"]) if d.get("score") else None,
                   created_at=float(d.get("created_at") or d["labelled_at"]))


def content_id(site: str, comment: Comment) -> str:
    """A label id derived from the comment itself, so sending the same comment again relabels, never duplicates."""
    canonical = json.dumps(comment.replace(site=site).to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{site}\n{canonical}".encode("utf-8")).hexdigest()[:24]


def for_check(check: CheckRecord, label: str, *, by: str, source: str = "api") -> LabelRecord:
    return LabelRecord(id=check.id, site=check.site, label=label, comment=check.comment, labelled_at=time.time(),
                       labelled_by=by, source=source, check_id=check.id, verdict=check.verdict, score=check.score)


def for_comment(site: str, comment: Comment, label: str, *, by: str, source: str = "api") -> LabelRecord:
    comment = comment.replace(site=site)
    return LabelRecord(id=content_id(site, comment), site=site, label=label, comment=comment,
                       labelled_at=time.time(), labelled_by=by, source=source)


def _index(label: str, site: str) -> str:
    return rediskeys.LABELS_BY_TIME.format(label=label, site=site)


UNLABELLED = "-"  # the condition "not labelled yet" for put(..., expect=) and remove(..., expect=)


class LabelConflict(Exception):
    """A conditional write found another label than it expected (a colleague's, landed meanwhile): nothing was
    written. `current` is the label now stored (None when there is none) and `labelled_by` who gave it."""

    def __init__(self, label_id: str, current: str | None, labelled_by: str, expected: str):
        self.label_id, self.current, self.labelled_by, self.expected = label_id, current, labelled_by, expected
        now = f"labelled {current} by {labelled_by or 'someone'}" if current else "not labelled"
        wanted = ("not labelled" if expected == UNLABELLED else f"labelled {expected}" if current != expected
                  else f"the {expected} label it had when it was read")
        super().__init__(f"changed meanwhile: {now} (expected {wanted}); nothing was stored")


class LabelStore:
    def __init__(self, client: redis.Redis):
        self.redis = client
        self._put = client.register_script(_PUT)
        self._remove = client.register_script(_REMOVE)
        self._fetch = client.register_script(_FETCH)

    def put(self, record: LabelRecord, *, keep_times: bool = False, expect: str = "",
            expect_at: float | None = None) -> LabelRecord:
        """put_many of one record; with `expect` (UNLABELLED, or the label it must have now, and with `expect_at`
        the labelled_at that label must still carry) the write happens only if that still holds, else
        LabelConflict and nothing is written."""
        return self.put_many([record], keep_times=keep_times, expect=expect, expect_at=expect_at)[0]

    def put_many(self, records: Sequence[LabelRecord], *, keep_times: bool = False, expect: str = "",
                 expect_at: float | None = None) -> list[LabelRecord]:
        """Store all records in one transaction (all or nothing); each result carries the label it replaced and
        the time Redis stamped it with (`keep_times` stores the records' own labelled_at instead: for loading
        labels whose times are known).

        An item whose label is unchanged is left alone (no audit entry), and its result has previous == label.
        `expect` (see put) is for one record only.
        """
        if not records:
            return []
        if expect and len(records) != 1:
            raise ValueError("a conditional label write takes one record")
        pipe = self.redis.pipeline(transaction=True)
        for r in records:
            self._put(keys=self._keys(r), args=self._args(r, keep_times, expect, expect_at), client=pipe)
        answers = pipe.execute()
        out = []
        for r, answer in zip(records, answers):
            old, stamp = (v.decode() if isinstance(v, bytes) else v for v in answer[:2])
            if len(answer) > 2:  # the condition did not hold: nothing was written
                raise LabelConflict(r.id, old or None, answer[3].decode(), expect)
            out.append(dataclasses.replace(r, previous=old or None, labelled_at=float(stamp)))
        self._count([r for r in out if r.previous != r.label])
        return out

    def _count(self, changed: list[LabelRecord]) -> None:
        """Console activity counters, after the labels are safely stored (a failure here loses only a count)."""
        if not changed:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for r in changed:
                activity.count_label(pipe, site=r.site, label=r.label, moderator=r.labelled_by, at=r.labelled_at)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("label activity not counted: %s", exc)

    def _keys(self, r: LabelRecord) -> list[str]:
        keys = [rediskeys.LABEL.format(id=r.id), rediskeys.LABEL_AUDIT.format(id=r.id), rediskeys.OVERTURNS]
        for label in ("all", "ham", "spam"):
            keys += [_index(label, r.site), _index(label, ALL_SITES)]
        if r.check_id:
            keys += queue_keys(r.site, r.verdict or "unsure") + [rediskeys.QUEUE_BY_TIME]
        return keys

    def _args(self, r: LabelRecord, keep_time: bool, expect: str = "", expect_at: float | None = None) -> list[str]:
        audit = json.dumps({"by": r.labelled_by, "to": r.label, "source": r.source})[:-1]
        fields = {"id": r.id, "site": r.site, "label": r.label,
                  "comment": json.dumps(r.comment.to_dict(), ensure_ascii=False),
                  "labelled_by": r.labelled_by, "source": r.source,
                  "check_id": r.check_id, "verdict": r.verdict, "score": "" if r.score is None else repr(r.score)}
        args = [r.id, r.label, repr(float(r.labelled_at)) if keep_time else "", audit, "1" if r.overturn else "0",
                expect, "" if expect_at is None or not expect else repr(float(expect_at))]
        for k, v in fields.items():
            args += [k, v]
        return args

    def remove(self, label_id: str, *, by: str, source: str = "console", expect: str = "",
               expect_at: float | None = None) -> LabelRecord | None:
        """Take a label back (a moderator's undo): it stops being training data, the audit trail says who took it
        back, and a check's label puts its comment back in the queue (at its newest check, unless another label of
        the comment stands). None when there was no such label; with
        `expect` (the label it must have now), LabelConflict when it has another and nothing changes."""
        record = self.get(label_id)
        if record is None:
            return None
        keys = [rediskeys.LABEL.format(id=record.id), rediskeys.LABEL_AUDIT.format(id=record.id), rediskeys.OVERTURNS]
        for label in ("all", "ham", "spam"):
            keys += [_index(label, record.site), _index(label, ALL_SITES)]
        requeued = self._requeued(record)
        if requeued is not None:
            keys += [rediskeys.CHECK.format(id=requeued.id), rediskeys.QUEUE_INDEXES]
            keys += queue_keys(requeued.site, requeued.verdict or "unsure") + [rediskeys.QUEUE_BY_TIME]
        # The site too: once the label is gone, its trail is all that says whose it was (site-scoped reads).
        audit = json.dumps({"by": by, "to": None, "source": source, "site": record.site})[:-1]
        rank = uncertainty(requeued.score if requeued is not None and requeued.score is not None else 0.5)
        stamp = "" if expect_at is None or not expect else repr(float(expect_at))
        settled = (rediskeys.SETTLED.format(digest=comment_digest(record.site, record.comment))
                   if record.check_id else "")
        old = self._remove(keys=keys, args=[record.id, audit, repr(rank), expect, stamp,
                                            requeued.id if requeued is not None else "",
                                            rediskeys.LABEL.format(id=""), settled])
        if not old:
            return None
        if isinstance(old, list):
            raise LabelConflict(record.id, old[0].decode(), old[1].decode(), expect)
        return dataclasses.replace(record, previous=old.decode() if isinstance(old, bytes) else old)

    def _requeued(self, record: LabelRecord) -> CheckRecord | LabelRecord | None:
        """What taking back this label puts back in the queue, when it is a check's label: the comment's newest check
        (the labelled one, or a newer one when the platform checked it again after the label; the labelled one may
        have passed its retention meanwhile), if it was queued (not a trusted author's; test checks are never
        labelled) and is still kept. The remove script requeues it only while no other label of the comment stands."""
        if not record.check_id:
            return None
        newest = self.redis.get(comment_key(record.site, record.comment))
        candidates = [newest.decode()] if newest is not None else []
        candidates += [record.check_id] if record.check_id not in candidates else []
        for check_id in candidates:
            stored = self.redis.hgetall(rediskeys.CHECK.format(id=check_id))
            if not stored:
                continue
            try:
                check = CheckRecord.from_hash(stored)
            except (ValueError, KeyError, TypeError):  # unreadable: requeue it as before, a moderator can label it
                return record if check_id == record.check_id else None
            return check if check.queued else None
        return None

    def get(self, label_id: str) -> LabelRecord | None:
        if not label_id or len(label_id) > 64:
            return None
        h = self.redis.hgetall(rediskeys.LABEL.format(id=label_id))
        return LabelRecord.from_hash(h) if h else None

    def audit(self, label_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.redis.lrange(rediskeys.LABEL_AUDIT.format(id=label_id), 0, -1)]

    def list(self, *, site: str | None = None, label: str | None = None, since: float | None = None,
             until: float | None = None, cursor: str | None = None,
             limit: int = 50) -> tuple[list[LabelRecord], str | None]:
        """Newest first, by the time of the latest label."""
        rows, next_cursor = pages.page(self.redis, _index(label or "all", site or ALL_SITES), limit=limit,
                                       cursor=cursor, reverse=True, low=_bound(since, "-inf"),
                                       high=_bound(until, "+inf"))
        return self._load([m for m, _ in rows]), next_cursor

    def export(self, *, site: str | None = None, label: str | None = None, since: float | None = None,
               until: float | None = None, chunk: int = 500) -> Iterator[LabelRecord]:
        """Every matching label, oldest first, read in chunks so an export of millions stays small in memory.

        Without `until`, the export ends at the time it started (Redis's clock, which stamps labels), or at its
        newest label if that is later (one imported with its own time): a label changed while it streams moves past
        that end and is not written twice; the next export `since` that time has it."""
        key = _index(label or "all", site or ALL_SITES)
        if until is None:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.zrevrange(key, 0, 0, withscores=True)
                (seconds, micros), newest = pipe.execute()
            until = max([seconds + micros / 1e6] + [score for _, score in newest])
        cursor = None
        while True:
            rows, cursor = pages.page(self.redis, key, limit=chunk, cursor=cursor, low=_bound(since, "-inf"),
                                      high=_bound(until, "+inf"))
            yield from self._load([m for m, _ in rows])
            if cursor is None:
                return

    def iter_examples(self, site: str | None = None) -> Iterator[tuple[Comment, str, float, str, str]]:
        """(comment, label, labelled_at, site, id) for training, oldest first."""
        index = self.training_index(site)
        fields = ("comment", "label", "labelled_at", "site")
        for i in range(0, len(index.ids), FETCH_CHUNK):
            ids = index.ids[i:i + FETCH_CHUNK]
            for label_id, (comment, label, labelled_at, site_) in zip(ids, self.fetch(ids, fields)):
                if comment is not None and label is not None:  # removed since the index was read
                    yield (stored_comment(comment.decode()), label.decode(), float(labelled_at), site_.decode(),
                           label_id)

    def training_index(self, site: str | None = None, newer_than: float | None = None) -> "TrainingIndex":
        """Every label's id and label, oldest first, with the newest label time and how many labels are newer than
        `newer_than`; one transaction, no hash read and no per-label score parsed."""
        scope = site or ALL_SITES
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrange(_index("all", scope), 0, -1)
            pipe.zrange(_index("spam", scope), 0, -1)
            pipe.zrange(_index("all", scope), -1, -1, withscores=True)
            pipe.zcount(_index("all", scope), "-inf" if newer_than is None else f"({newer_than!r}", "+inf")
            members, spam, last, newer = pipe.execute()
        spam = set(spam)
        return TrainingIndex(ids=[m.decode() for m in members],
                             y=np.fromiter(map(spam.__contains__, members), dtype=np.int8, count=len(members)),
                             last_time=float(last[0][1]) if last else None, newer=int(newer))

    def fetch(self, ids: Sequence[str], fields: Sequence[str]) -> list[list[bytes | None]]:
        """The given fields of each label, in the order of `ids` (None for a label removed meanwhile)."""
        out: list[list[bytes | None]] = []
        k = len(fields)
        for i in range(0, len(ids), FETCH_CHUNK):
            flat = self._fetch(keys=[rediskeys.LABEL.format(id=x) for x in ids[i:i + FETCH_CHUNK]], args=list(fields))
            out.extend(flat[j:j + k] for j in range(0, len(flat), k))
        return out

    def training_examples(self, ids: Sequence[str]) -> tuple[list[Comment], np.ndarray, np.ndarray]:
        """(comments, labels 1 spam / 0 ham, which of `ids` were found) of the given labels; a label removed since
        its id was read is skipped."""
        comments: list[Comment] = []
        y: list[bool] = []
        found = np.zeros(len(ids), dtype=bool)
        for i, (comment, label) in enumerate(self.fetch(ids, ("comment", "label"))):
            if comment is None or label is None:
                continue
            found[i] = True
            comments.append(_training_comment(comment))
            y.append(label == b"spam")
        return comments, np.asarray(y, dtype=np.int8), found

    def count(self, site: str | None = None) -> int:
        return self.redis.zcard(_index("all", site or ALL_SITES))

    def newest_before(self, ts: float, label: str, limit: int, site: str | None = None) -> list[str]:
        """Ids of the newest `limit` labels of one kind set before `ts`, newest first."""
        return [m.decode() for m in self.redis.zrevrangebyscore(_index(label, site or ALL_SITES), f"({ts!r}", "-inf",
                                                                start=0, num=limit)]

    def count_since(self, ts: float, site: str | None = None) -> int:
        """Labels set or changed at or after `ts`."""
        return self.redis.zcount(_index("all", site or ALL_SITES), ts, "+inf")

    def overturns_since(self, ts: float) -> int:
        """Labels at or after `ts` that contradict their check's verdict."""
        return self.redis.zcount(rediskeys.OVERTURNS, ts, "+inf")

    def _load(self, ids: list[str]) -> list[LabelRecord]:
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(rediskeys.LABEL.format(id=i))
        return [LabelRecord.from_hash(h) for h in pipe.execute() if h]


@dataclasses.dataclass(frozen=True)
class TrainingIndex:
    """The labels a retrain reads, oldest first (ties in id order, as the time index keeps them)."""

    ids: list[str]
    y: np.ndarray  # 1 spam, 0 ham, as labelled when the index was read
    last_time: float | None  # the newest label's time
    newer: int  # labels newer than the time asked about (all of them when none was)


@dataclasses.dataclass(frozen=True)
class LabelBatch:
    """Labels to read in another process (a retrain's feature workers): the connection's plain settings and the
    label ids, never a client. `load()` gives (comments, labels, weights, sources) of those still stored; a
    comment's source is its site, as the model's own fit counts them."""

    connection: tuple[type, tuple[tuple[str, Any], ...]]
    ids: tuple[str, ...]

    def load(self) -> tuple[list[Comment], np.ndarray, np.ndarray, list[str]]:
        comments, y, _ = LabelStore(_worker_client(self.connection)).training_examples(self.ids)
        return comments, y, np.ones(len(y)), [c.site or "unknown" for c in comments]


def connection_spec(client: redis.Redis) -> tuple[type, tuple[tuple[str, Any], ...]]:
    """What another process needs to open a connection like `client`'s: its class and plain settings (host, port or
    socket path, database, credentials, timeouts); replies stay bytes."""
    pool = client.connection_pool
    plain = {k: v for k, v in pool.connection_kwargs.items() if v is None or isinstance(v, (str, bytes, int, float))}
    plain["decode_responses"] = False
    return pool.connection_class, tuple(sorted(plain.items()))


_WORKER_CLIENTS: dict[tuple, redis.Redis] = {}


def _worker_client(spec: tuple[type, tuple[tuple[str, Any], ...]]) -> redis.Redis:
    client = _WORKER_CLIENTS.get(spec)
    if client is None:
        cls, kwargs = spec
        client = _WORKER_CLIENTS[spec] = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=cls, **dict(kwargs)))
    return client


_COMMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(Comment))


def _training_comment(raw: bytes) -> Comment:
    """stored_comment with the faster parser, for the millions of reads of a retrain; anything unusual (a key an
    older version wrote, JSON orjson refuses) goes through stored_comment itself."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return stored_comment(raw.decode())
    return Comment(**data) if data.keys() <= _COMMENT_FIELDS else stored_comment(raw.decode())


def _bound(value: float | None, default: str) -> float | str:
    return default if value is None else value


def after_labels(client: redis.Redis, settings, records: Sequence[LabelRecord]) -> None:
    """Tell the learning loop about new or changed labels; cheap, and never raises into the caller."""
    changed = [r for r in records if r.previous != r.label]
    if not changed:
        return
    try:
        from training import jobs
    except ModuleNotFoundError as exc:  # a deployment without the learning loop still stores labels
        if exc.name != "training.jobs":
            log.exception("could not load the learning loop")
        return
    try:
        # A relabel from spam to ham or back corrects a label the serving model may have learned: it counts as
        # a moderator saying the model is wrong, like a label that overturns its check's verdict.
        jobs.maybe_trigger_retrain(client, settings, new_labels=len(changed),
                                   overturns=sum(1 for r in changed if r.overturn or r.previous in LABELS))
    except Exception:  # the label is stored; a retrain trigger failing must not turn that into an error
        log.exception("could not notify the learning loop of %d labels", len(changed))
