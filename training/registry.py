"""Model versions in Redis (signed artifact bytes + metadata), the current pointer, and the serving holder.

Redis is the only thing web nodes and workers share, so artifacts travel through it and are cached on local disk;
every load checks the HMAC before unpickling. Promotion moves the pointer and writes history in one transaction.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import redis as redis_lib

from training import rediskeys as keys
from training.settings import Settings
from training.threads import ProcessThread

log = logging.getLogger("winnow.registry")

HISTORY_LIMIT = 500
_CACHE_VERSION = re.compile(r"^v[0-9]{1,12}\Z")
_CACHE_DIGEST = re.compile(r"^[0-9a-f]{64}\Z")


class RegistryError(Exception):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


class UnknownVersion(RegistryError):
    def __init__(self, version: str):
        super().__init__(f"no model version {version!r} in the registry")
        self.version = version


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class Registry:
    """Model versions, the serving pointer and their history, all in Redis."""

    def __init__(self, redis: redis_lib.Redis, secret: str, *, keep_versions: int = 10,
                 cache_dir: Path | None = None):
        if not secret:
            raise ValueError("the registry needs the deployment secret to sign and verify artifacts")
        self.redis = redis
        self.secret = secret
        self.keep_versions = max(1, keep_versions)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    @classmethod
    def from_settings(cls, redis: redis_lib.Redis, settings: Settings) -> "Registry":
        return cls(redis, settings.secret_key, keep_versions=settings.keep_versions,
                   cache_dir=Path(settings.models_dir) / "cache")

    # ---- reading -------------------------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        return _text(self.redis.get(keys.MODEL_CURRENT))

    def get(self, version: str) -> dict:
        """The metadata of one version (no artifact bytes); UnknownVersion when absent."""
        raw = self.redis.hget(keys.MODEL_VERSION.format(version=version), "info")
        if raw is None:
            raise UnknownVersion(version)
        info = json.loads(raw)
        info["serving"] = info["version"] == self.current_version()
        return info

    def list(self) -> list[dict]:
        """Every kept version's metadata, newest first, with `serving` marking the current one."""
        versions = [_text(v) for v in self.redis.zrevrange(keys.MODEL_VERSIONS, 0, -1)]
        if not versions:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for v in versions:
                pipe.hget(keys.MODEL_VERSION.format(version=v), "info")
            pipe.get(keys.MODEL_CURRENT)
            *raws, current = pipe.execute()
        current = _text(current)
        out = []
        for raw in raws:
            if raw is None:  # pruned between the two reads
                continue
            info = json.loads(raw)
            info["serving"] = info["version"] == current
            out.append(info)
        return out

    def history(self, limit: int = 50) -> list[dict]:
        return [json.loads(raw) for raw in self.redis.lrange(keys.MODEL_HISTORY, 0, max(0, limit - 1))]

    def load(self, version: str, *, from_store: bool = False):
        """The Model of `version`, from the local cache or Redis, verified by HMAC either way. `from_store` reads
        the bytes in Redis even when the cache has them: what a node without this cache would load.

        Raises UnknownVersion, or training.artifacts.ArtifactError for an artifact this deployment did not sign.
        """
        from training import artifacts

        key = keys.MODEL_VERSION.format(version=version)
        digest = _text(self.redis.hget(key, "sha256"))
        if digest is None:
            raise UnknownVersion(version)
        cached = None if from_store else self._read_cache(version, digest)
        if cached is not None:
            blob, meta = cached
            try:
                return artifacts.loads(blob, meta, self.secret)
            except artifacts.ArtifactError:
                log.warning("cached artifact of model %s failed verification; fetching it again", version)
        blob, meta_raw = self.redis.hmget(key, ["artifact", "artifact_meta"])
        if blob is None or meta_raw is None:
            raise UnknownVersion(version)
        try:
            meta = json.loads(meta_raw)
        except ValueError as exc:  # damaged in Redis: refused like a bad signature, not a crash
            raise artifacts.ArtifactError(f"model {version}'s metadata in Redis is not valid JSON: {exc}") from None
        model = artifacts.loads(blob, meta, self.secret)  # raises ArtifactError before anything is unpickled
        self._write_cache(version, digest, blob, meta)
        return model

    # ---- writing -------------------------------------------------------------------------------------------------
    def publish(self, model, meta: dict | None = None, promoted_by: str = "", reason: str = "",
                promote: bool = False, status: str | None = None, *,
                expected_current: str | None = None) -> str:
        """Store a signed model as a new version; with promote=True it also becomes current, atomically.

        expected_current names the version the model was judged against: when another version serves by then
        (a rollback or promotion during the run), the model is kept as a candidate and the refusal is recorded,
        so a long run never undoes a decision taken while it ran. get(version)["status"] tells which happened.
        """
        from training import artifacts

        blob, artifact_meta = artifacts.dumps(model, self.secret)
        version = f"v{int(self.redis.incr(keys.MODEL_SEQ))}"
        now = time.time()
        base = dict(meta or {})
        base.update(version=version, created_at=now, size=len(blob),
                    sha256=hashlib.sha256(blob).hexdigest(), published_by=promoted_by)
        key = keys.MODEL_VERSION.format(version=version)
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(keys.MODEL_CURRENT)
                    previous = _text(pipe.get(keys.MODEL_CURRENT))
                    refused = promote and expected_current is not None and previous != expected_current
                    promoting = promote and not refused
                    why = (f"the serving version changed during the run (was {expected_current}, now {previous})"
                           if refused else reason)
                    info = dict(base, status="candidate" if refused else status or
                                ("promoted" if promote else "candidate"))
                    if promoting:
                        info.update(promoted_at=now, promoted_by=promoted_by, promote_reason=why, replaced=previous)
                    elif refused:
                        info["reason"] = why
                    else:
                        info.setdefault("reason", why)
                    pipe.multi()
                    pipe.hset(key, mapping={"artifact": blob, "artifact_meta": json.dumps(artifact_meta),
                                            "sha256": info["sha256"], "info": json.dumps(info)})
                    pipe.zadd(keys.MODEL_VERSIONS, {version: now})
                    if promoting:
                        pipe.set(keys.MODEL_CURRENT, version)
                        self._push_history(pipe, "promote", version, previous, promoted_by, why)
                    elif refused or info["status"] == "rejected":
                        self._push_history(pipe, "reject", version, previous, promoted_by, why)
                    pipe.execute()
                    break
                except redis_lib.WatchError:
                    continue
        self.prune()
        return version

    def promote(self, version: str, by: str, reason: str = "", *, kind: str = "promote",
                expected_current: str | None = None) -> dict:
        """Make `version` the serving one: pointer, version metadata and history change together or not at all.

        The artifact is loaded and verified first: a version no web node would load (foreign HMAC, another
        scikit-learn) is refused with RegistryError instead of leaving every node serving its previous model.
        With `expected_current`, a serving version that changed meanwhile refuses the promotion (RegistryError).
        Promoting the version that already serves changes nothing. A promotion (not a rollback) records the version
        it replaced, which is where a later rollback returns to.
        """
        from training import artifacts

        try:
            self.load(version, from_store=True)  # every node loads these bytes, whatever this one has cached
        except artifacts.ArtifactError as exc:
            raise RegistryError(f"model {version} cannot be served: {exc}") from None
        key = keys.MODEL_VERSION.format(version=version)
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(keys.MODEL_CURRENT, key)
                    raw = pipe.hget(key, "info")
                    if raw is None:
                        raise UnknownVersion(version)
                    previous = _text(pipe.get(keys.MODEL_CURRENT))
                    if expected_current is not None and previous != expected_current:
                        raise RegistryError(f"the serving version changed from {expected_current} to {previous} "
                                            "meanwhile; nothing was changed")
                    info = json.loads(raw)
                    if previous == version:
                        pipe.unwatch()
                        info["serving"] = info["unchanged"] = True
                        return info
                    now = time.time()
                    info.update(status="promoted", promoted_at=now, promoted_by=by, promote_reason=reason)
                    if kind == "promote":
                        info["replaced"] = previous
                    pipe.multi()
                    pipe.hset(key, "info", json.dumps(info))
                    pipe.set(keys.MODEL_CURRENT, version)
                    self._push_history(pipe, kind, version, previous, by, reason)
                    pipe.execute()
                    info["serving"] = True
                    return info
                except redis_lib.WatchError:
                    continue

    def rollback(self, by: str, reason: str = "") -> dict:
        """Serve again the version the current one replaced (skipping versions no longer kept)."""
        current = self.current_version()
        if current is None:
            raise RegistryError("the registry is empty: nothing to roll back")
        target = self._rollback_target(current)
        if target is None:
            raise RegistryError(f"no earlier kept version to roll back to from {current}")
        return self.promote(target, by, reason or f"rollback from {current}", kind="rollback",
                            expected_current=current)

    def record_rejection(self, version_meta: dict, by: str, reason: str) -> None:
        """A challenger refused without storing its artifact still leaves a trace in the history."""
        with self.redis.pipeline() as pipe:
            self._push_history(pipe, "reject", version_meta.get("version", ""), self.current_version(), by, reason,
                               extra={k: version_meta[k] for k in ("metrics", "counts") if k in version_meta})
            pipe.execute()

    def prune(self) -> list[str]:
        """Keep the newest keep_versions versions; the serving version is never deleted.

        The pointer is watched from the read to the delete, so a version promoted meanwhile is never the one lost.
        """
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(keys.MODEL_CURRENT, keys.MODEL_VERSIONS)
                    versions = [_text(v) for v in pipe.zrevrange(keys.MODEL_VERSIONS, 0, -1)]
                    current = _text(pipe.get(keys.MODEL_CURRENT))
                    doomed = [v for v in versions[self.keep_versions:] if v != current]
                    if not doomed:
                        return []
                    pipe.multi()
                    pipe.zrem(keys.MODEL_VERSIONS, *doomed)
                    pipe.delete(*[keys.MODEL_VERSION.format(version=v) for v in doomed])
                    pipe.execute()
                    return doomed
                except redis_lib.WatchError:
                    continue

    def bootstrap(self, load_starter: Callable[[], Any] | None = None, *, wait: float = 120.0) -> str:
        """The current version, seeding an empty registry from the starter model first (one process does it)."""
        current = self.current_version()
        if current is not None:
            return current
        lock = self.redis.lock(keys.MODEL_BOOTSTRAP_LOCK, timeout=300, blocking_timeout=wait)
        if not lock.acquire():
            raise RegistryError("another process is bootstrapping the registry and did not finish in time")
        try:
            current = self.current_version()
            if current is not None:
                return current
            if load_starter is None:
                from training.starter import load_starter
            model = load_starter()
            meta = {"kind": "starter", "source": "training.starter"}
            model_meta = getattr(model, "meta", None)
            if isinstance(model_meta, dict):
                meta["model_meta"] = _jsonable(model_meta)
            version = self.publish(model, meta, promoted_by="bootstrap",
                                   reason="registry was empty: the shipped starter model", promote=True)
            log.info("model registry bootstrapped with the starter model as %s", version)
            return version
        finally:
            try:
                lock.release()
            except redis_lib.exceptions.LockError:
                pass

    # ---- internals -----------------------------------------------------------------------------------------------
    def _push_history(self, pipe, kind: str, version: str, previous: str | None, by: str, reason: str,
                      extra: dict | None = None) -> None:
        event = {"kind": kind, "version": version, "previous": previous, "by": by, "reason": reason,
                 "at": time.time()}
        if extra:
            event.update(extra)
        pipe.lpush(keys.MODEL_HISTORY, json.dumps(event))
        pipe.ltrim(keys.MODEL_HISTORY, 0, HISTORY_LIMIT - 1)

    def _rollback_target(self, current: str) -> str | None:
        # Follow the chain of promotions backwards: each version's last promotion names what it replaced (in its
        # metadata; for a version promoted before that was kept, or no longer kept itself, in the history).
        # Rollbacks record nothing there, so two rollbacks step back twice instead of toggling.
        seen = {current}
        version = current
        events: list[dict] | None = None
        while True:
            raw = self.redis.hget(keys.MODEL_VERSION.format(version=version), "info")
            info = json.loads(raw) if raw else {}
            if "replaced" in info:
                previous = info["replaced"]
            else:
                if events is None:
                    events = self.history(HISTORY_LIMIT)
                event = next((e for e in events if e["kind"] == "promote" and e["version"] == version), None)
                previous = event.get("previous") if event else None
            if not previous or previous in seen:
                return None
            version = previous
            seen.add(version)
            if self.redis.exists(keys.MODEL_VERSION.format(version=version)):
                return version

    def _cache_paths(self, version: str, digest: str) -> tuple[Path, Path] | None:
        # Both come from Redis: anything but the shapes publish writes could climb out of the cache directory.
        if self.cache_dir is None or not _CACHE_VERSION.match(version) or not _CACHE_DIGEST.match(digest):
            return None
        stem = f"{version}-{digest[:16]}"
        return self.cache_dir / f"{stem}.joblib", self.cache_dir / f"{stem}.json"

    def _read_cache(self, version: str, digest: str):
        paths = self._cache_paths(version, digest)
        if paths is None:
            return None
        try:
            blob = paths[0].read_bytes()
            meta = json.loads(paths[1].read_text())
        except (OSError, ValueError):
            return None
        if hashlib.sha256(blob).hexdigest() != digest:
            return None
        return blob, meta

    def _write_cache(self, version: str, digest: str, blob: bytes, meta: dict) -> None:
        paths = self._cache_paths(version, digest)
        if paths is None:
            return
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            for path, data in ((paths[1], json.dumps(meta).encode()), (paths[0], blob)):
                tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
        except OSError as exc:  # a read-only disk only costs a fetch from Redis next time
            log.warning("could not cache model %s under %s: %s", version, self.cache_dir, exc)


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


class ServingModel:
    """The model one process serves, swapped atomically when the registry's current pointer moves.

    Readers take `snapshot()` (or `.model` / `.version`) without a lock: the (version, model) pair is one
    reference, replaced only after the new model is fully loaded and verified, so no request sees half of a swap.
    """

    def __init__(self, redis: redis_lib.Redis | None, settings: Settings | None, *,
                 load_starter: Callable[[], Any] | None = None):
        self.redis = redis
        self.settings = settings
        self._load_starter = load_starter
        self._state: tuple[str | None, Any] = (None, None)
        self._stop = threading.Event()
        self._poller = ProcessThread(self._poll, "winnow-model-poller")
        self._following = False  # start() was called and stop() was not: each process polls for itself
        self._refused: dict[str, float] = {}
        # The version the registry names as serving when this process refused to load it (signed with another
        # secret, or by another scikit-learn): this node serves something else and says so at /readyz.
        self.refused_current: str | None = None
        self.registry = Registry.from_settings(redis, settings) if redis is not None and settings else None
        # Called (on the poller's thread) after each swap or refusal, so what reports the served version (the web
        # process's metrics) follows it at once, not at its next request.
        self.on_change: Callable[[], None] | None = None

    @classmethod
    def fixed(cls, model, version: str = "fixed") -> "ServingModel":
        """A holder that always serves `model` (tests, one-off scripts): no Redis, no thread."""
        holder = cls(None, None)
        holder._state = (version, model)
        return holder

    @property
    def model(self):
        self._ensure_poller()
        return self._state[1]

    @property
    def version(self) -> str | None:
        self._ensure_poller()
        return self._state[0]

    def snapshot(self) -> tuple[str | None, Any]:
        self._ensure_poller()
        return self._state

    def start(self) -> "ServingModel":
        """Load the current version (bootstrapping an empty registry) and start following the pointer."""
        if self.registry is None:
            return self
        try:
            version = self.registry.bootstrap(self._load_starter)
            self._swap_to(version)
        except (redis_lib.RedisError, RegistryError) as exc:
            log.error("model registry unavailable at start (%s); serving the starter model until it answers", exc)
        except Exception:  # a missing or broken starter must not keep the web process from starting
            log.exception("could not seed the empty model registry; waiting for a published version")
        if self._state[1] is None:
            self._serve_starter_directly()
        self._stop.clear()
        self._following = True
        self._poller.ensure()
        return self

    def stop(self) -> None:
        self._following = False
        self._stop.set()
        thread = self._poller.forget()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def check_now(self) -> bool:
        """Compare with the registry once and swap when the pointer moved; True when a new model is served."""
        if self.registry is None:
            return False
        try:
            current = self.registry.current_version()
        except redis_lib.RedisError as exc:
            log.debug("registry poll failed: %s", exc)
            return False
        if current != self.refused_current:
            self.refused_current = None  # the pointer moved on from the version this process refused
        if current is None or current == self._state[0]:
            return False
        refused_at = self._refused.get(current)
        if refused_at is not None and time.monotonic() - refused_at < 30:
            return False
        return self._swap_to(current)

    # ---- internals -----------------------------------------------------------------------------------------------
    def _swap_to(self, version: str) -> bool:
        try:
            return self._load_and_swap(version)
        finally:
            if self.on_change is not None:
                try:
                    self.on_change()
                except Exception:  # a report must never stop the swap or the poller
                    log.exception("model change listener failed")

    def _load_and_swap(self, version: str) -> bool:
        from training import artifacts

        try:
            model = self.registry.load(version)
        except artifacts.ArtifactError as exc:
            self._refused[version] = time.monotonic()
            self.refused_current = version
            log.error("refused model %s: %s; still serving %s", version, exc, self._state[0] or "no version yet")
            return False
        except (UnknownVersion, redis_lib.RedisError) as exc:
            log.warning("could not load model %s (%s); still serving %s", version, exc, self._state[0] or "no version yet")
            return False
        except Exception as exc:  # anything else a damaged version can raise: refused, and said once per version
            self._refused[version] = time.monotonic()
            self.refused_current = version
            log.exception("refused model %s: %s; still serving %s", version, exc, self._state[0] or "no version yet")
            return False
        self._state = (version, model)
        self._refused.pop(version, None)
        self.refused_current = None
        log.info("now serving model %s", version)
        return True

    def _serve_starter_directly(self) -> None:
        try:
            if self._load_starter is not None:
                model = self._load_starter()
            else:
                from training.starter import load_starter
                model = load_starter()
        except Exception:
            log.exception("could not load the starter model")
            return
        self._state = ("starter", model)

    def _ensure_poller(self) -> None:
        # A forked web worker (gunicorn preload) inherits the holder but not its thread: start one of its own.
        if self._following:
            self._poller.ensure()

    def _poll(self) -> None:
        interval = max(0.05, float(self.settings.model_poll_seconds))
        while not self._stop.wait(interval):
            try:
                self.check_now()
            except Exception:  # the poller must outlive any one bad poll
                log.exception("model poll failed")
