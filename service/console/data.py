"""JSON the console's pages need and the public API does not offer: sites to filter by, word highlights for shown
comments, undo of a label, and activity per day. Everything else the pages fetch from /api/v1 directly."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from service import auth, checking
from service.context import services
from service.http import ApiError
from training import activity

api = Blueprint("console_api", __name__, url_prefix="/moderate/api")

MAX_EXPLAIN = 50


def _scope(requested: str | None = None) -> str | None:
    return auth.site_scope(auth.current(), requested or None)


@api.get("/sites")
@auth.requires("moderator")
def sites():
    principal = auth.current()
    if principal.site:
        return jsonify({"sites": [principal.site], "scoped": True})
    found = sorted({r.site for r in services().keys.list() if r.site})
    return jsonify({"sites": found, "scoped": False})


@api.get("/activity")
@auth.requires("moderator")
def activity_per_day():
    try:
        days = int(request.args.get("days", "30"))
    except ValueError:
        raise ApiError(400, "invalid", "must be a whole number of days", field="days") from None
    if not 1 <= days <= activity.MAX_READ_DAYS:
        raise ApiError(400, "invalid", f"must be between 1 and {activity.MAX_READ_DAYS}", field="days")
    return jsonify(activity.daily(services().redis, days=days, site=_scope(request.args.get("site"))))


@api.get("/explain")
@auth.requires("moderator")
def explain():
    """Word highlights for shown checks, computed on demand by the serving model (stored checks keep only their
    top reasons). Content comes back cut into [text, weight] segments so the page never does offset arithmetic."""
    raw = request.args.get("ids", "")
    ids = [i for i in raw.split(",") if i][:MAX_EXPLAIN + 1]
    if len(ids) > MAX_EXPLAIN:
        raise ApiError(400, "invalid", f"at most {MAX_EXPLAIN} ids at a time", field="ids")
    scope = _scope()
    version, model = services().serving.snapshot()
    out = {}
    if model is not None:
        for check_id in ids:
            try:
                record = checking.get_check(check_id, site_scope=scope)
            except checking.NotFound:
                continue
            out[check_id] = {"segments": segments(record.comment.content, _highlights(model, record.comment)),
                             "model_version": version}
    return jsonify({"explanations": out, "model_version": version})


def _highlights(model, comment) -> list[dict]:
    verdict = model.score(comment, top=0, explain=True)
    return list(getattr(verdict, "highlights", None) or [])


def segments(content: str, highlights: list[dict]) -> list[list]:
    """`content` cut at the highlight spans: [[text, weight or None], ...] covering all of it, in order."""
    out: list[list] = []
    pos = 0
    for h in sorted(highlights, key=lambda h: (h["start"], h["end"])):
        start, end = max(int(h["start"]), pos), min(int(h["end"]), len(content))
        if end <= start:
            continue  # overlapping or out of range: keep what is already coloured
        if start > pos:
            out.append([content[pos:start], None])
        out.append([content[start:end], round(float(h["weight"]), 4)])
        pos = end
    if pos < len(content):
        out.append([content[pos:], None])
    return out
