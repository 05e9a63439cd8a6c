"""Per-day activity counters for the moderator console: checks, verdicts and labels, per site and per moderator.

The stores add to these in the same pipeline as the write they count, so counting costs no extra round trip.
Counters are one Redis hash per UTC day and expire after ACTIVITY_DAYS; reading N days is one pipelined HGETALL each.
"""
from __future__ import annotations

import datetime as _dt
import time

import redis

from training import rediskeys

ALL_SITES = "*"
ACTIVITY_DAYS = 400  # counters are kept a little over a year
MAX_READ_DAYS = 366
_SEP = "|"  # sites are URLs and moderator names are free text; a site's own "|" is written " " (see _site)


def _site(site: str) -> str:
    """A site as the fields hold it: a "|" in its path is written as a space, which no site name holds
    (training/apikeys.normalise_site refuses whitespace, and "|" in a host), so no site's fields can read as
    another's, and "/a|b" and "/a%7Cb" stay two sites."""
    return site.replace(_SEP, " ")


def day_of(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d")


def _bump(pipe, day: str, fields: dict[str, int]) -> None:
    key = rediskeys.ACTIVITY.format(day=day)
    for field, n in fields.items():
        pipe.hincrby(key, field, n)
    pipe.expire(key, ACTIVITY_DAYS * 86400)


def count_check(pipe, *, site: str, verdict: str, created_at: float) -> None:
    """Count one stored check (call inside the pipeline that stores it)."""
    fields = {}
    for s in {_site(site), ALL_SITES}:
        fields[f"checks{_SEP}{s}"] = 1
        fields[f"verdict:{verdict}{_SEP}{s}"] = 1
    _bump(pipe, day_of(created_at), fields)


def count_label(pipe, *, site: str, label: str, moderator: str, at: float | None = None) -> None:
    """Count one label or relabel by `moderator` (call inside the pipeline that stores it)."""
    fields = {}
    for s in {_site(site), ALL_SITES}:
        fields[f"labels{_SEP}{s}"] = 1
        fields[f"label:{label}{_SEP}{s}"] = 1
        fields[f"by{_SEP}{s}{_SEP}{moderator or '?'}"] = 1
    _bump(pipe, day_of(at if at is not None else time.time()), fields)


def daily(client: redis.Redis, *, days: int = 30, site: str | None = None, now: float | None = None) -> dict:
    """The last `days` UTC days (oldest first) of counts for one site or all of them.

    {"days": [...], "checks": [...], "verdicts": {"ham": [...], "unsure": [...], "spam": [...]},
     "labels": [...], "labelled": {"ham": [...], "spam": [...]}, "moderators": {name: total}}
    """
    days = max(1, min(int(days), MAX_READ_DAYS))
    site = _site(site) if site else ALL_SITES
    end = _dt.datetime.fromtimestamp(now if now is not None else time.time(), _dt.timezone.utc).date()
    names = [(end - _dt.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(rediskeys.ACTIVITY.format(day=name))
    out = {"days": names, "checks": [], "verdicts": {v: [] for v in ("ham", "unsure", "spam")}, "labels": [],
           "labelled": {"ham": [], "spam": []}, "moderators": {}}
    for h in pipe.execute():
        counts = {k.decode(): int(v) for k, v in h.items()}
        out["checks"].append(counts.get(f"checks{_SEP}{site}", 0))
        for v, series in out["verdicts"].items():
            series.append(counts.get(f"verdict:{v}{_SEP}{site}", 0))
        out["labels"].append(counts.get(f"labels{_SEP}{site}", 0))
        for v, series in out["labelled"].items():
            series.append(counts.get(f"label:{v}{_SEP}{site}", 0))
        prefix = f"by{_SEP}{site}{_SEP}"
        for field, n in counts.items():
            if field.startswith(prefix):
                name = field[len(prefix):]
                out["moderators"][name] = out["moderators"].get(name, 0) + n
    return out


def sites_seen(client: redis.Redis, *, days: int = MAX_READ_DAYS, now: float | None = None) -> set[str]:
    """Every site checked or labelled on one of the last `days` UTC days, as the counters name them (a site with
    no key of its own included: an unscoped token may check for any site). One pipelined HKEYS per day."""
    end = _dt.datetime.fromtimestamp(now if now is not None else time.time(), _dt.timezone.utc).date()
    pipe = client.pipeline(transaction=False)
    for i in range(max(1, min(int(days), ACTIVITY_DAYS))):
        pipe.hkeys(rediskeys.ACTIVITY.format(day=(end - _dt.timedelta(days=i)).isoformat()))
    found: set[str] = set()
    for fields in pipe.execute():
        for raw in fields:
            kind, sep, site = raw.decode().partition(_SEP)
            if sep and kind in ("checks", "labels") and site != ALL_SITES:
                found.add(site.replace(" ", _SEP))  # _site wrote a site's "|" as a space
    return found
