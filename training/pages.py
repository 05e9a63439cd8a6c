"""Cursor pages over a Redis sorted set, stable while members are added or removed between pages.

A cursor names the last member served and its score, so a page never repeats or skips a member that stayed put,
whatever was inserted before it meanwhile (offset pagination would shift).
"""
from __future__ import annotations

import redis

from training.schema import ValidationError

MAX_LIMIT = 500


def encode(score: float, member: str) -> str:
    return f"{score!r}~{member}"


def decode(cursor: str, field: str = "cursor") -> tuple[float, str]:
    score, sep, member = cursor.partition("~")
    try:
        value = float(score)
    except ValueError:
        value = float("nan")
    if not sep or not member or value != value or len(cursor) > 200:
        raise ValidationError(field, "is not a cursor this API returned")
    return value, member


def page(client: redis.Redis, key: str, *, limit: int, cursor: str | None = None, reverse: bool = False,
         low: float | str = "-inf", high: float | str = "+inf") -> tuple[list[tuple[str, float]], str | None]:
    """Up to `limit` (member, score) pairs after `cursor`, ascending (or descending) by score then member.

    Returns the pairs and the cursor for the next page (None when this page is the last).
    """
    if cursor:
        last_score, last_member = decode(cursor)
        if reverse:
            high = last_score if _num(high) > last_score else high
        else:
            low = last_score if _num(low) < last_score else low
    else:
        last_score, last_member = None, None
    out: list[tuple[str, float]] = []
    offset = 0
    batch = limit + 1
    while len(out) <= limit:
        if reverse:
            rows = client.zrevrangebyscore(key, high, low, start=offset, num=batch, withscores=True)
        else:
            rows = client.zrangebyscore(key, low, high, start=offset, num=batch, withscores=True)
        if not rows:
            break
        offset += len(rows)
        for raw, score in rows:
            member = raw.decode()
            if last_member is not None and score == last_score:
                # Members sharing the cursor's score come in member order; skip the ones already served.
                if (member <= last_member) if not reverse else (member >= last_member):
                    continue
            out.append((member, score))
        if len(rows) < batch:
            break
    next_cursor = encode(out[limit - 1][1], out[limit - 1][0]) if len(out) > limit else None
    return out[:limit], next_cursor


def _num(value: float | str) -> float:
    return float(value) if not isinstance(value, str) else float(value.replace("(", ""))
