"""Per-site checking policy: verdict thresholds, trusted roles and shadow mode, with defaults from Settings.

Overrides live in one Redis hash per site. Each web process holds every site's overrides in memory, refreshed
within about a second of a change (training.directory), so a check reads no Redis, and while Redis is unreachable
the policies last read keep applying. A process that has never read them (Redis away since it started) refuses
checks rather than apply defaults a site may have changed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import Any, Mapping

import redis

from training import directory, rediskeys
from training.settings import Settings
from training.schema import ValidationError

log = logging.getLogger("winnow.sites")

THRESHOLDS = ("unsure_threshold", "spam_threshold", "discard_threshold")
FIELDS = THRESHOLDS + ("shadow", "trusted_roles", "unsure_as_spam")


@dataclasses.dataclass(frozen=True)
class SitePolicy:
    unsure_threshold: float
    spam_threshold: float
    discard_threshold: float
    shadow: bool = False  # answer ham to the platform but record the real verdict
    trusted_roles: frozenset[str] = frozenset()
    unsure_as_spam: bool | None = None  # the Akismet face's answer for unsure; None: the deployment's setting
    overridden: tuple[str, ...] = ()  # which fields come from the site's own settings

    def verdict(self, score: float) -> str:
        if score >= self.spam_threshold:
            return "spam"
        if score >= self.unsure_threshold:
            return "unsure"
        return "ham"

    def to_dict(self) -> dict[str, Any]:
        return {"unsure_threshold": self.unsure_threshold, "spam_threshold": self.spam_threshold,
                "discard_threshold": self.discard_threshold, "shadow": self.shadow,
                "trusted_roles": sorted(self.trusted_roles), "unsure_as_spam": self.unsure_as_spam,
                "overridden": list(self.overridden)}


def parse_roles(value: Any, field: str = "trusted_roles") -> frozenset[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(field, "must be a list of role names")
    roles = frozenset(v.strip().lower() for v in value if v.strip())
    if any(len(r) > 64 for r in roles) or len(roles) > 50:
        raise ValidationError(field, "must list at most 50 roles of at most 64 characters")
    return roles


def defaults(settings: Settings) -> SitePolicy:
    return SitePolicy(settings.unsure_threshold, settings.spam_threshold, settings.discard_threshold,
                      False, parse_roles(settings.trusted_roles))


def merge(base: SitePolicy, overrides: Mapping[str, Any]) -> SitePolicy:
    """The base policy with `overrides` applied; raises ValidationError naming the bad field."""
    values = dataclasses.asdict(base)
    overridden = set(base.overridden)
    for name, value in overrides.items():
        if name not in FIELDS:
            raise ValidationError(name, "unknown setting; known: " + ", ".join(FIELDS))
        if name in THRESHOLDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValidationError(name, "must be a number between 0 and 1")
            values[name] = float(value)
        elif name == "shadow":
            if not isinstance(value, bool):
                raise ValidationError(name, "must be true or false")
            values[name] = value
        elif name == "unsure_as_spam":
            if value is not None and not isinstance(value, bool):
                raise ValidationError(name, "must be true, false or null (the deployment's default)")
            values[name] = value
        else:
            values[name] = parse_roles(value, name)
        overridden.add(name)
    if not values["unsure_threshold"] <= values["spam_threshold"] <= values["discard_threshold"]:
        field = "spam_threshold" if values["unsure_threshold"] > values["spam_threshold"] else "discard_threshold"
        raise ValidationError(field, "thresholds must satisfy unsure <= spam <= discard")
    values["overridden"] = tuple(sorted(overridden))
    return SitePolicy(**values)


class SiteStore:
    def __init__(self, client: redis.Redis, settings: Settings, *, cache_seconds: float = 5.0):
        self.redis = client
        self.base = defaults(settings)
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[SitePolicy, float]] = {}
        self._lock = threading.Lock()
        # Every site's own settings as last read by load_all (training.directory keeps it fresh); a site missing
        # from it has the defaults.
        self._known: dict[str, SitePolicy] | None = None
        # Sites checks asked about that the last read did not know, and those looked up since: settings written
        # without the index (by hand, or by an older Winnow during an upgrade) are found within about a second.
        self._missed: set[str] = set()
        self._looked: set[str] = set()
        self.directory = None

    def policy(self, site: str) -> SitePolicy:
        """The effective policy for a site: from the snapshot of every site's settings once it is read, else from
        a short in-process cache or Redis. Raises redis.RedisError only when Redis is away and this process has
        never read the site's settings: the defaults could answer "spam" to a site in shadow mode."""
        if self.directory is not None:
            self.directory.ensure_running()
        known = self._known
        if known is not None:
            policy = known.get(site)
            if policy is not None:
                return policy
            if site not in self._looked and len(self._missed) < 1000:
                self._missed.add(site)
            return self.base
        now = time.monotonic()
        hit = self._cache.get(site)
        if hit is not None and now - hit[1] < self.cache_seconds:
            return hit[0]
        try:
            policy = self._load(site)
        except redis.RedisError:
            if hit is not None:
                return hit[0]
            raise
        except ValidationError:  # a hand-edited hash with bad values: fall back rather than refuse checks
            policy = self.base
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[site] = (policy, now)
        return policy

    def fresh(self, site: str) -> SitePolicy:
        """The policy read from Redis now (admin reads), raising on Redis errors."""
        return self._load(site)

    def update(self, site: str, changes: Mapping[str, Any]) -> SitePolicy:
        """Apply changes (None resets a field to its default) after validating the result as a whole."""
        current = self._overrides(site)
        for name, value in changes.items():
            if value is None:
                if name not in FIELDS:
                    raise ValidationError(name, "unknown setting; known: " + ", ".join(FIELDS))
                current.pop(name, None)
            else:
                current[name] = value
        policy = merge(self.base, current)
        key = rediskeys.SITE.format(site=site)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        if current:
            pipe.hset(key, mapping={k: json.dumps(_jsonable(v)) for k, v in current.items()})
            pipe.sadd(rediskeys.SITES_INDEX, site)
        else:
            pipe.srem(rediskeys.SITES_INDEX, site)
        directory.bump(pipe)
        pipe.execute()
        with self._lock:
            self._cache.pop(site, None)
            if self._known is not None:
                known = dict(self._known)
                if current:
                    known[site] = policy
                else:
                    known.pop(site, None)
                self._known = known
        return policy

    def index_missed(self) -> bool:
        """Look up the sites checks asked about that the last read did not know; index those that have settings
        of their own and say so (True: read everything again). Raises for Redis errors."""
        missed, self._missed = self._missed, set()
        if not missed:
            return False
        names = sorted(missed)
        found = [site for site, raw in zip(names, directory.read_hashes(
            self.redis, [rediskeys.SITE.format(site=site) for site in names])) if raw]
        if found:
            # Most often the settings were just written (and indexed) by another process and this one's copy is
            # a moment old: only sites really absent from the index are worth a warning and an index entry.
            with self.redis.pipeline(transaction=False) as pipe:
                for site in found:
                    pipe.sismember(rediskeys.SITES_INDEX, site)
                unindexed = [site for site, indexed in zip(found, pipe.execute()) if not indexed]
            if unindexed:
                log.warning("settings of %d site(s) were missing from the site index; indexed now", len(unindexed))
                with self.redis.pipeline(transaction=True) as pipe:
                    pipe.sadd(rediskeys.SITES_INDEX, *unindexed)
                    directory.bump(pipe)
                    pipe.execute()
        self._looked.update(names)
        return bool(found)

    def load_all(self) -> None:
        """Read every site's own settings into memory; raises for Redis errors."""
        if not self.redis.exists(rediskeys.SITES_INDEXED):
            # Site hashes written before the index existed: found once per deployment.
            prefix = rediskeys.SITE.format(site="")
            found = [k.decode()[len(prefix):] for k in self.redis.scan_iter(match=prefix + "*", count=1000)]
            pipe = self.redis.pipeline(transaction=True)
            if found:
                pipe.sadd(rediskeys.SITES_INDEX, *found)
            pipe.set(rediskeys.SITES_INDEXED, "1")
            pipe.execute()
        sites = [s.decode() for s in self.redis.smembers(rediskeys.SITES_INDEX)]
        known: dict[str, SitePolicy] = {}
        for site, raw in zip(sites, directory.read_hashes(self.redis, [rediskeys.SITE.format(site=s) for s in sites])):
            if not raw:
                continue
            try:
                known[site] = merge(self.base, {k.decode(): json.loads(v) for k, v in raw.items()})
            except (ValidationError, ValueError):  # a hand-edited hash with bad values: the defaults
                log.warning("site %s has unreadable settings; using the defaults", site)
        with self._lock:
            self._known = known
            self._looked = set()

    def _overrides(self, site: str) -> dict[str, Any]:
        raw = self.redis.hgetall(rediskeys.SITE.format(site=site))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def _load(self, site: str) -> SitePolicy:
        overrides = self._overrides(site)
        return merge(self.base, overrides) if overrides else self.base


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value
