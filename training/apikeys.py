"""Site keys and moderator/admin tokens, stored only as SHA-256 digests.

A plain key is shown once, when it is made; Redis never holds it. Lookups are cached in-process for a few seconds
so a check costs no Redis round trip for auth; revocation therefore applies within `cache_seconds`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import string
import threading
import time
import unicodedata
from typing import Any
from urllib.parse import urlsplit

import redis

from training import directory, rediskeys
from training.schema import ValidationError, check_text

log = logging.getLogger("winnow.keys")

ROLES = ("site", "moderator", "admin")
SITE_KEY_LENGTH = 12  # the Akismet key shape, so Akismet plugins accept a Winnow site key unchanged
_SITE_KEY_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_PREFIX = "wm_"
_MAX_PRESENTED = 256  # longer credentials are refused before hashing


def normalise_site(value: Any, field: str = "site") -> str:
    """A site's canonical URL: lower-case scheme and host, no default port, no trailing slash, query or fragment.

    A bare host is taken as https. Every place that compares sites (keys, checks, labels) goes through here, so
    "https://Blog.example.com/" and "blog.example.com" are the same site.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a site URL such as https://blog.example.com")
    text = value.strip()
    check_text(field, text)
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValidationError(field, "is not a valid URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host or any(c.isspace() for c in text) or len(text) > 512:
        raise ValidationError(field, "must be an http(s) URL such as https://blog.example.com")
    if ":" in host:  # IPv6 literal (no zone id)
        if not all(c in _IPV6_CHARS for c in host):
            raise ValidationError(field, "has an IPv6 address that is no address")
        host = f"[{host}]"
    elif not all(c.isalnum() or c in ".-_" if c.isascii() else _host_letter(c) for c in host):
        raise ValidationError(field, "has a host name that is no host name")
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{host}{path}"


_IPV6_CHARS = frozenset("0123456789abcdef:.")


def _host_letter(c: str) -> bool:
    """A character outside ASCII that a host name in another script may hold: letters, marks and digits, the joiners
    some scripts need, and the full stops IDNA reads as dots. (In ASCII: letters, digits, ".", "-" and "_".)"""
    return unicodedata.category(c)[0] in "LMN" or c in "\u200c\u200d\u3002\uff0e\uff61"


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str  # public, short; never the key itself
    role: str
    site: str  # "" for a moderator/admin token spanning every site
    name: str
    created_at: float
    revoked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> "KeyRecord":
        d = {k.decode(): v.decode() for k, v in h.items()}
        return cls(id=d["id"], role=d["role"], site=d.get("site", ""), name=d.get("name", ""),
                   created_at=float(d.get("created_at", 0)), revoked=d.get("revoked") == "1")


def digest(plain: str) -> str:
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def new_plain_key(role: str) -> str:
    if role == "site":
        return "".join(secrets.choice(_SITE_KEY_ALPHABET) for _ in range(SITE_KEY_LENGTH))
    return TOKEN_PREFIX + secrets.token_urlsafe(24)  # 32 url-safe characters


class KeyStore:
    def __init__(self, client: redis.Redis, *, cache_seconds: float = 5.0, stale_seconds: float = 3600.0):
        self.redis = client
        self.cache_seconds = cache_seconds
        # While Redis is unreachable, a key seen within this window keeps working so scoring never stops.
        self.stale_seconds = stale_seconds
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}
        self._lock = threading.Lock()
        # Every live key as last read by load_all (training.directory keeps it fresh): digest -> record, id -> record.
        self._known: dict[str, KeyRecord] | None = None
        self._known_ids: dict[str, KeyRecord] = {}
        self.directory = None  # the training.directory.Directory refreshing the snapshot, when there is one

    def create(self, site: str = "", role: str = "site", name: str = "") -> tuple[str, KeyRecord]:
        if role not in ROLES:
            raise ValidationError("role", "must be one of " + ", ".join(ROLES))
        if role == "site" or site:
            site = normalise_site(site)
        if not isinstance(name, str) or len(name) > 200:
            raise ValidationError("name", "must be a string of at most 200 characters")
        plain = new_plain_key(role)
        key_digest = digest(plain)
        for _ in range(10):
            key_id = secrets.token_hex(4)
            if self.redis.hsetnx(rediskeys.KEY_IDS, key_id, key_digest):
                break
        else:  # pragma: no cover - 2^32 ids
            raise RuntimeError("could not allocate a key id")
        record = KeyRecord(id=key_id, role=role, site=site, name=name.strip(), created_at=time.time())
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(rediskeys.KEY.format(digest=key_digest), mapping={
            "id": record.id, "role": record.role, "site": record.site, "name": record.name,
            "created_at": repr(record.created_at), "revoked": "0"})
        pipe.sadd(rediskeys.KEYS_INDEX, key_digest)
        directory.bump(pipe)
        pipe.execute()
        return plain, record

    def authenticate(self, plain: str | None) -> KeyRecord | None:
        """The live record for a presented key, or None when unknown or revoked."""
        if not plain or len(plain) > _MAX_PRESENTED:
            return None
        key_digest = digest(plain)
        known = self._snapshot()
        if known is not None:
            record = known.get(key_digest)
            if record is not None:
                return record
        # Made up, revoked, or newer than the last read: Redis says which.
        return self._cached("d:" + key_digest, lambda: self._by_digest(key_digest))

    def get(self, key_id: str) -> KeyRecord | None:
        """The live record for a public key id (how a console session refers to its key), or None."""
        if not key_id or len(key_id) > 64:
            return None
        if self._snapshot() is not None:
            record = self._known_ids.get(key_id)
            if record is not None:
                return record
        return self._cached("i:" + key_id, lambda: self._by_id(key_id))

    def load_all(self) -> None:
        """Read every live key into memory (a round trip per thousand keys); raises for Redis errors."""
        digests = [d.decode() for d in self.redis.smembers(rediskeys.KEYS_INDEX)]
        known: dict[str, KeyRecord] = {}
        hashes = directory.read_hashes(self.redis, [rediskeys.KEY.format(digest=d) for d in digests])
        unreadable = 0
        for d, h in zip(digests, hashes):
            if h:
                try:
                    record = KeyRecord.from_hash(h)
                except (KeyError, ValueError, UnicodeDecodeError):  # edited by hand: that key alone is unusable
                    unreadable += 1
                    continue
                if not record.revoked:
                    known[d] = record
        if unreadable:
            log.warning("%d key record(s) could not be read and are refused", unreadable)
        with self._lock:
            self._known = known
            self._known_ids = {r.id: r for r in known.values()}
            # Lookups made before this read may hold keys revoked since: the read is what counts now.
            self._cache.clear()

    def _snapshot(self) -> dict[str, KeyRecord] | None:
        if self.directory is not None:
            self.directory.ensure_running()
        return self._known

    def list(self, site: str | None = None) -> list[KeyRecord]:
        digests = sorted(self.redis.smembers(rediskeys.KEYS_INDEX))
        pipe = self.redis.pipeline(transaction=False)
        for d in digests:
            pipe.hgetall(rediskeys.KEY.format(digest=d.decode()))
        records = [KeyRecord.from_hash(h) for h in pipe.execute() if h]
        if site is not None:
            site = normalise_site(site)
            records = [r for r in records if r.site == site]
        return sorted(records, key=lambda r: r.created_at)

    def revoke(self, key_id: str) -> bool:
        key_digest = self.redis.hget(rediskeys.KEY_IDS, key_id)
        if key_digest is None:
            return False
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(rediskeys.KEY.format(digest=key_digest.decode()), "revoked", "1")
            directory.bump(pipe)
            changed, _ = pipe.execute()
        with self._lock:
            self._cache.clear()
            if self._known is not None:
                self._known = {d: r for d, r in self._known.items() if r.id != key_id}
                self._known_ids = {r.id: r for r in self._known.values()}
        return changed is not None

    def _by_digest(self, key_digest: str) -> KeyRecord | None:
        h = self.redis.hgetall(rediskeys.KEY.format(digest=key_digest))
        if not h:
            return None
        record = KeyRecord.from_hash(h)
        return None if record.revoked else record

    def _by_id(self, key_id: str) -> KeyRecord | None:
        key_digest = self.redis.hget(rediskeys.KEY_IDS, key_id)
        return None if key_digest is None else self._by_digest(key_digest.decode())

    def _cached(self, cache_key: str, load) -> KeyRecord | None:
        now = time.monotonic()
        hit = self._cache.get(cache_key)
        if hit is not None and now - hit[1] < self.cache_seconds:
            return hit[0]
        try:
            record = load()
        except redis.RedisError:
            if hit is not None and hit[0] is not None and now - hit[1] < self.stale_seconds:
                return hit[0]
            raise
        with self._lock:
            if len(self._cache) > 10000:  # bounded: a flood of made-up keys must not grow memory
                self._cache.clear()
            self._cache[cache_key] = (record, now)
        return record
