"""JSON the console's pages need and the public API does not offer: sites to filter by, word highlights for shown
comments, undo of a label, and activity per day. Everything else the pages fetch from /api/v1 directly."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from service import auth, checking
from service.api import condition_of
from service.context import services
from service.http import ApiError, json_object
from training import activity, pages, rediskeys
from training.labels import UNLABELLED
from training.schema import LABELS

api = Blueprint("console_api", __name__, url_prefix="/moderate/api")

MAX_EXPLAIN = 50
SEARCH_PAGE = 50
SEARCH_SCAN = 5000  # labels read per search call at most; the cursor carries on from there


def _scope(requested: str | None = None) -> str | None:
    return auth.site_scope(auth.current(), requested or None)


@api.get("/sites")
@auth.requires("moderator")
def sites():
    principal = auth.current()
    if principal.site:
        return jsonify({"sites": [principal.site], "scoped": True})
    svc = services()
    # Sites with a key, with settings of their own, or with checks or labels in the last year: an unscoped token
    # may check for a site that has no key.
    found = {r.site for r in svc.keys.list() if r.site} | activity.sites_seen(svc.redis)
    found |= {s.decode() for s in svc.redis.smembers(rediskeys.SITES_INDEX)}
    return jsonify({"sites": sorted(found), "scoped": False})


@api.get("/activity")
@auth.requires("moderator")
def activity_per_day():
    raw = request.args.get("days", "30")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise ApiError(400, "invalid", "must be a whole number of days", field="days")
    days = int(raw)
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


@api.post("/labels/<label_id>/undo")
@auth.requires("moderator")
def undo_label(label_id: str):
    """Take a label back; a check's label returns the check to the queue. With {"expect": label}, only while it is
    still that label (409 label_changed when a colleague changed it meanwhile)."""
    body = json_object(required=False)
    unknown = sorted(set(body) - {"expect", "expect_at"})
    if unknown:
        raise ApiError(400, "invalid", "unknown field", field=unknown[0])
    expect, expect_at = condition_of(body)
    if expect == UNLABELLED:
        raise ApiError(400, "invalid", 'must be "spam" or "ham": the label being taken back', field="expect")
    try:
        removed = checking.unlabel(label_id, moderator=auth.current(), site_scope=_scope(), expect=expect,
                                   expect_at=expect_at)
    except checking.NotFound:
        raise ApiError(404, "not_found", "no such label", field="id") from None
    return jsonify({"id": removed.id, "removed": removed.previous, "check_id": removed.check_id or None})


@api.post("/labels/<label_id>")
@auth.requires("moderator")
def relabel(label_id: str):
    """Change a past label, whether or not its check is still stored."""
    body = json_object()
    unknown = sorted(set(body) - {"label", "expect", "expect_at"})
    if unknown:
        raise ApiError(400, "invalid", "unknown field", field=unknown[0])
    expect, expect_at = condition_of(body)
    try:
        stored = checking.relabel(label_id, body.get("label"), moderator=auth.current(), site_scope=_scope(),
                                  expect=expect, expect_at=expect_at)
    except checking.NotFound:
        raise ApiError(404, "not_found", "no such label", field="id") from None
    return jsonify({**stored.to_dict(), "previous": stored.previous})


@api.get("/labels/search")
@auth.requires("moderator")
def search_labels():
    """Labelled comments whose text, author, email, link or moderator contains every word of `q`, newest first.

    Labels are not indexed by text, so one call reads at most SEARCH_SCAN labels and returns a cursor to go on
    from where it stopped; the page asks again for more."""
    q = (request.args.get("q") or "").strip()
    if len(q) > 200:
        raise ApiError(400, "invalid", "must be at most 200 characters", field="q")
    label = request.args.get("label") or None
    if label is not None and label not in LABELS:
        raise ApiError(400, "invalid", 'must be "spam" or "ham"', field="label")
    words = q.casefold().split()
    store = services().labels
    site = _scope(request.args.get("site"))
    cursor = request.args.get("cursor") or None
    found, scanned = [], 0
    while len(found) < SEARCH_PAGE and scanned < SEARCH_SCAN:
        records, cursor = store.list(site=site, label=label, cursor=cursor, limit=200)
        scanned += len(records)
        for i, r in enumerate(records):
            if _matches(r, words):
                found.append(r)
                if len(found) == SEARCH_PAGE:
                    # Resume right after this record, not after the whole batch.
                    cursor = pages.encode(r.labelled_at, r.id) if i < len(records) - 1 or cursor else None
                    break
        if cursor is None:
            break
    return jsonify({"items": [r.to_dict() for r in found], "next_cursor": cursor, "scanned": scanned})


def _matches(record, words: list[str]) -> bool:
    c = record.comment
    haystack = "\n".join((c.content, c.author, c.author_email, c.author_url, record.labelled_by)).casefold()
    return all(w in haystack for w in words)
