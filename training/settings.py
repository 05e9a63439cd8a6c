"""Typed settings, read from the environment once.

Every `WINNOW_*` variable is parsed here and nowhere else; tests build a Settings directly. Defaults are safe for
a single machine; a deployment with several machines sets WINNOW_SECRET_KEY to the same value everywhere.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parent.parent


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(value: str) -> bool:
    word = value.strip().lower()
    if word not in _TRUE | _FALSE:
        raise ValueError("is not true or false (1/0, true/false, yes/no, on/off)")
    return word in _TRUE


@dataclasses.dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    secret_key: str = ""  # HMAC key for model artifacts and console sessions; see load_secret()
    data_dir: Path = ROOT / "var"
    models_dir: Path = ROOT / "models"
    # Verdict thresholds (per-site overrides live in Redis). Scores are calibrated spam probabilities.
    unsure_threshold: float = 0.5
    spam_threshold: float = 0.9
    discard_threshold: float = 0.99
    retention_days: int = 30
    # Roles sent with a comment (user_role) that are answered ham; comma-separated, per-site overrides in Redis.
    trusted_roles: str = "administrator,editor,author,moderator,owner"
    write_buffer_size: int = 10000  # checked comments held in memory per process while Redis is unreachable
    auth_cache_seconds: float = 5.0  # how long a key lookup is reused in-process (revocation applies within this)
    site_cache_seconds: float = 5.0  # how long per-site settings are reused in-process
    rate_limit: str = "600/minute"  # per key; the limits package's syntax ("100/second", "10000/hour")
    # Learning loop
    retrain_after_labels: int = 50
    retrain_after_overturns: int = 10
    # Up to this many labels every retrain refits on all of them (tens of seconds), never a quick update: a refit
    # learns a new campaign from a few dozen labels, where an update on them alone learns it only in part.
    update_above_labels: int = 150_000  # fitting.IN_MEMORY_MAX: refits below it take under a minute
    retrain_cron: str = "0 3 * * *"  # nightly at 03:00 UTC
    gate_mcc_tolerance: float = 0.01
    keep_versions: int = 10
    model_poll_seconds: float = 0.5
    use_starter_corpora: bool = False
    queue_name: str = "winnow"
    retrain_lock_seconds: int = 20  # a killed retrain frees its lock this long after its last heartbeat
    # Console session cookie: Secure always when true; otherwise Secure whenever the request itself came over https.
    secure_cookies: bool = False
    # Reverse proxies in front of the web processes whose X-Forwarded-For/-Proto to believe (0: none). Behind one,
    # every client would otherwise share the proxy's address: one rate-limit budget for all requests without a key.
    proxy_hops: int = 0
    # Akismet face: answer an unsure verdict `true` (no discard) so plugins hold it in their spam folder for review;
    # false answers it `false` (published). A site policy's own `unsure_as_spam`, when it has one, wins.
    akismet_unsure_as_spam: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values: dict = {}
        url = env.get("WINNOW_REDIS_URL") or env.get("REDIS_URL")
        if not url:
            # `make run` without REDIS_URL runs an embedded Redis and notes its port under the data dir, so a
            # `winnow` command in another terminal reaches the same deployment.
            url = embedded_redis_url(Path(env.get("WINNOW_DATA_DIR") or cls.data_dir))
        if url:
            values["redis_url"] = url
        for field in dataclasses.fields(cls):
            key = "WINNOW_" + field.name.upper()
            if key not in env or field.name == "redis_url":
                continue
            raw = env[key]
            default = field.default
            try:
                if isinstance(default, bool):
                    values[field.name] = _bool(raw)
                elif isinstance(default, int):
                    values[field.name] = int(raw)
                elif isinstance(default, float):
                    values[field.name] = float(raw)
                elif isinstance(default, Path):
                    values[field.name] = Path(raw)
                else:
                    values[field.name] = raw
            except ValueError as exc:
                kind = {bool: "", int: "is not a whole number", float: "is not a number"}.get(type(default), "")
                raise ValueError(f"{key}={raw!r} {kind or exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        if not settings.secret_key:
            settings = dataclasses.replace(settings, secret_key=load_secret(settings.data_dir))
        return settings


    def validate(self) -> None:
        """Raise ValueError naming the variable of a setting no process could run with."""
        import math

        thresholds = (self.unsure_threshold, self.spam_threshold, self.discard_threshold)
        if not all(math.isfinite(t) and 0.0 <= t <= 1.0 for t in thresholds) or not (
                self.unsure_threshold <= self.spam_threshold <= self.discard_threshold):
            raise ValueError("WINNOW_UNSURE_THRESHOLD <= WINNOW_SPAM_THRESHOLD <= WINNOW_DISCARD_THRESHOLD must hold, "
                             f"each between 0 and 1; they are {thresholds[0]}, {thresholds[1]}, {thresholds[2]}")
        from croniter import croniter

        if not croniter.is_valid(self.retrain_cron):
            raise ValueError(f"WINNOW_RETRAIN_CRON={self.retrain_cron!r} is not a cron expression "
                             "(five fields: minute hour day month weekday)")
        for name in ("retention_days", "write_buffer_size", "keep_versions", "retrain_lock_seconds"):
            if getattr(self, name) < 1:
                raise ValueError(f"WINNOW_{name.upper()}={getattr(self, name)} must be at least 1")
        for name in ("retrain_after_labels", "retrain_after_overturns", "update_above_labels", "proxy_hops"):
            if getattr(self, name) < 0:
                raise ValueError(f"WINNOW_{name.upper()}={getattr(self, name)} must not be negative")
        for name in ("auth_cache_seconds", "site_cache_seconds", "model_poll_seconds", "gate_mcc_tolerance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"WINNOW_{name.upper()}={value} must be a number of at least 0")


EMBEDDED_REDIS_STATE = Path("redis") / "embedded.json"  # written by service.launcher while its Redis runs


def embedded_redis_url(data_dir: Path) -> str | None:
    """The URL of the embedded Redis `make run` started for this data dir, if one is running."""
    try:
        state = json.loads((Path(data_dir) / EMBEDDED_REDIS_STATE).read_text())
        return f"redis://127.0.0.1:{int(state['port'])}/0"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_secret(data_dir: Path) -> str:
    """The deployment secret for a single machine: made once, kept in var/secret_key with mode 0600.

    Several machines must share WINNOW_SECRET_KEY instead, or each would refuse the others' model artifacts.
    """
    path = Path(data_dir) / "secret_key"
    try:
        existing = path.read_text().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: a process starting at the same moment
    # sees either no secret or the complete one, never an empty file; the first link wins.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return path.read_text().strip()
