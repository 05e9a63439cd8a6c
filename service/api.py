"""The JSON API under /api/v1: checks, labels, the moderation queue and per-site settings.

Handlers parse and validate, call one function in service.checking (or a store), and serialise; every refusal
names its field. Site keys act on their own site only; listing labels or the queue needs a moderator token.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Callable, Iterator

import orjson
import redis
from flask import Blueprint, Flask, Response, g, jsonify, request, stream_with_context

from service import checking
from service.auth import current, requires, site_scope
from service.context import services
from service.http import ApiError, BatchInvalid, error_response, json_object, store_down_message
from training import activity, pages
from training.checks import VERDICTS
from training.labels import MAX_BATCH as MAX_LABELS
from training.labels import UNLABELLED, LabelConflict
from training.schema import LABELS, Comment, ValidationError, parse_label, parse_timestamp

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_CHECK_BATCH = 100
MAX_IDS = 10


# ---- checks ----------------------------------------------------------------------------------------------------
@bp.post("/check")
@requires("site", "moderator")
def check() -> Response:
    body = json_object()
    is_test = _flag(body.pop("is_test", False), "is_test")
    ids = _ids(body.pop("ids", None), "ids")
    comment = Comment.from_dict(body)
    site = _site_for(comment.site, "site")
    result = checking.check(comment, site=site, principal=current(), is_test=is_test, source="api", ids=ids)
    return _json(result.to_dict())


@bp.post("/check/batch")
@requires("site", "moderator")
def check_batch() -> Response:
    body = json_object()
    _only(body, {"comments", "is_test"})
    is_test = _flag(body.get("is_test", False), "is_test")

    def parse(item: dict, prefix: str):
        item_test = _flag(item.pop("is_test", is_test), prefix + "is_test")
        ids = _ids(item.pop("ids", None), prefix + "ids")
        comment = Comment.from_dict(item, prefix=prefix)
        return comment, _site_for(comment.site, prefix + "site"), item_test, ids

    parsed = _parse_items(body, "comments", MAX_CHECK_BATCH, parse)
    principal = current()
    results = [checking.check(c, site=s, principal=principal, is_test=t, source="api", ids=ids).to_dict()
               for c, s, t, ids in parsed]
    return jsonify({"results": results})


@bp.get("/checks/<check_id>")
@requires("site", "moderator")
def get_check(check_id: str) -> Response:
    record = checking.get_check(check_id, site_scope=site_scope(current()))
    return jsonify(record.to_dict())


# ---- labels ----------------------------------------------------------------------------------------------------
@bp.post("/comments/<check_id>/label")
@requires("site", "moderator")
def label_check(check_id: str) -> Response:
    body = json_object()
    _only(body, {"label", "expect", "expect_at"})
    label = parse_label(body.get("label"))
    expect, expect_at = condition_of(body)
    scope = site_scope(current())
    try:
        stored = checking.label_check(check_id, label, moderator=current(), site_scope=scope, expect=expect,
                                      expect_at=expect_at)
    except checking.NotFound:
        try:
            checking.label_of(check_id, site_scope=scope)
        except checking.NotFound:
            raise ApiError(404, "not_found", "no such check (it may have passed its retention)", field="id") from None
        raise ApiError(404, "not_found", f"{check_id} is a label given with its content, not a check: relabel it "
                       "with POST /api/v1/labels, sending the same site and content", field="id") from None
    return jsonify(_label_ack(stored))


def condition_of(body: dict[str, Any]) -> tuple[str, float | None]:
    """The optional condition of a label write, so two moderators never silently overwrite each other: `expect`
    absent for none, null for "not labelled yet", or the label the comment must have now (the one the moderator
    saw); `expect_at`, with a label, the labelled_at it must still carry (a label changed and changed back
    meanwhile is someone else's)."""
    if "expect" not in body:
        if "expect_at" in body:
            raise ValidationError("expect_at", "goes with expect, the label it stamps")
        return "", None
    value = body["expect"]
    if value is None:
        expect = UNLABELLED
    elif value in LABELS:
        expect = value
    else:
        raise ValidationError("expect", 'must be null (not labelled yet), "spam" or "ham"')
    at = body.get("expect_at")
    if at is None:
        return expect, None
    if expect == UNLABELLED or type(at) not in (int, float) or not math.isfinite(at):
        raise ValidationError("expect_at", "must be the labelled_at (a number) of the expected label")
    return expect, float(at)


# Labels of comments never checked are training data for the model every site shares: moderators only. A site
# key gives feedback on its own checks (POST /comments/<id>/label) instead.
@bp.post("/labels")
@requires("moderator")
def post_labels() -> Response:
    body = json_object()
    _only(body, {"items", "site"})
    default_site = body.get("site")
    if default_site is not None and not isinstance(default_site, str):
        raise ValidationError("site", "must be a site URL")

    def parse(item: dict, prefix: str):
        label = parse_label(item.pop("label", None), prefix + "label")
        comment = Comment.from_dict(item, prefix=prefix)
        if comment.site:
            return _site_for(comment.site, prefix + "site"), comment, label
        return _site_for(default_site, "site" if default_site else prefix + "site"), comment, label

    parsed = _parse_items(body, "items", MAX_LABELS, parse)
    stored = checking.label_new_many(parsed, moderator=current())
    return jsonify({"stored": len(stored), "labels": [_label_ack(r) for r in stored]}), 201


@bp.get("/labels")
@requires("moderator")
def list_labels() -> Response:
    q = _label_query()
    records, next_cursor = services().labels.list(cursor=request.args.get("cursor") or None,
                                                  limit=_limit(), **q)
    return jsonify({"items": [r.to_dict() for r in records], "next_cursor": next_cursor})


@bp.get("/labels/export")
@requires("moderator")
def export_labels() -> Response:
    rows = services().labels.export(**_label_query())
    first = next(rows, None)  # read before the status line goes out, so a Redis outage is still a clean 503

    def lines() -> Iterator[str]:
        if first is None:
            return
        yield json.dumps(first.to_dict(), ensure_ascii=False) + "\n"
        for record in rows:
            yield json.dumps(record.to_dict(), ensure_ascii=False) + "\n"

    return Response(stream_with_context(lines()), mimetype="application/x-ndjson",
                    headers={"Content-Disposition": 'attachment; filename="labels.jsonl"'})


@bp.get("/labels/<label_id>")
@requires("moderator")
def get_label(label_id: str) -> Response:
    record = services().labels.get(label_id)
    scope = site_scope(current())
    if record is None:
        # Taken back (undone): no longer a label, but its trail still says who labelled it and who took it back.
        audit = services().labels.audit(label_id) if label_id and len(label_id) <= 64 else []
        site = next((entry.get("site") for entry in reversed(audit) if entry.get("to") is None), None)
        if audit and audit[-1].get("to") is None and (scope is None or site == scope):
            return jsonify({"id": label_id, "site": site, "label": None, "audit": audit})
        raise ApiError(404, "not_found", "no such label", field="id")
    if scope is not None and record.site != scope:
        raise ApiError(404, "not_found", "no such label", field="id")
    return jsonify({**record.to_dict(), "audit": services().labels.audit(label_id)})


# ---- moderation queue --------------------------------------------------------------------------------------------
@bp.get("/queue")
@requires("moderator")
def queue() -> Response:
    verdict = request.args.get("verdict") or None
    if verdict is not None and verdict not in VERDICTS:
        raise ValidationError("verdict", "must be one of " + ", ".join(VERDICTS))
    scope = site_scope(current(), request.args.get("site") or None)
    records, next_cursor = checking.queue(site_scope=scope, verdict=verdict, cursor=request.args.get("cursor"),
                                          limit=_limit())
    return jsonify({"items": [r.to_dict() for r in records], "next_cursor": next_cursor})


# ---- per-site settings --------------------------------------------------------------------------------------------
@bp.get("/sites/<path:site>/settings")
@requires("moderator")
def get_site_settings(site: str) -> Response:
    site = site_scope(current(), site)
    return jsonify({"site": site, **services().sites.fresh(site).to_dict(), "warnings": _site_warnings(site)})


@bp.put("/sites/<path:site>/settings")
@requires("admin")
def put_site_settings(site: str) -> Response:
    site = site_scope(current(), site)
    policy = services().sites.update(site, json_object())
    return jsonify({"site": site, **policy.to_dict(), "warnings": _site_warnings(site)})


def _site_warnings(site: str) -> list[str]:
    """Settings apply to checks of exactly this site: say so when nothing is known by that name (a bare host is
    read as https, while a key's site may be http), naming the known site it most likely means."""
    svc = services()
    try:
        keyed = {r.site for r in svc.keys.list() if r.site}
        if site in keyed or site in activity.sites_seen(svc.redis):
            return []
    except redis.RedisError:  # the settings themselves were read or stored: answer them, and say what is unknown
        return ["whether a key, check or label is known for this site could not be looked up: the data store is "
                "unavailable"]
    _, _, rest = site.partition("://")
    alike = sorted(k for k in keyed if k.partition("://")[2] == rest)
    hint = f"; did you mean {' or '.join(alike)}?" if alike else ""
    return [f"no site key belongs to {site} and no check or label for it was seen in the last year: these settings "
            f"apply only to checks of exactly that site{hint}"]


# ---- helpers -----------------------------------------------------------------------------------------------------
def _json(body: dict[str, Any]) -> Response:
    # The hot path's answer in one orjson.dumps: jsonify would also sort the keys on every check.
    return Response(orjson.dumps(body), mimetype="application/json")


def _site_for(requested: str | None, field: str) -> str:
    site = site_scope(current(), requested or None, field=field)
    if site is None:
        raise ValidationError(field, "is required for a token not bound to one site")
    return site


def _parse_items(body: dict, name: str, most: int, parse: Callable[[dict, str], Any]) -> list[Any]:
    """Parse every item of body[name], collecting each item's first error so one answer names them all."""
    items = body.get(name)
    if not isinstance(items, list) or not items:
        raise ValidationError(name, "must be a non-empty list")
    if len(items) > most:
        raise ValidationError(name, f"must hold at most {most} items")
    parsed, errors = [], []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationError(f"{name}[{i}]", "must be a JSON object")
            parsed.append(parse(dict(item), f"{name}[{i}]."))
        except ValidationError as exc:
            errors.append(exc)
    if errors:
        raise BatchInvalid(errors)
    return parsed


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    raise ValidationError(field, "must be true or false")


def _ids(value: Any, field: str) -> dict[str, str] | None:
    if value is None:
        return None
    if (not isinstance(value, dict) or len(value) > MAX_IDS
            or not all(isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool)
                       and len(k) <= 64 and len(str(v)) <= 256 for k, v in value.items())):
        raise ValidationError(field, f"must be an object of at most {MAX_IDS} short string ids")
    return {k: str(v) for k, v in value.items()}


def _only(body: dict, allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise ValidationError(str(key), "unknown field")


def _limit(default: int = 50) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:  # int() also takes " 5", "1_0", other digits
        raise ValidationError("limit", "must be an integer")
    value = int(raw)
    if not 1 <= value <= pages.MAX_LIMIT:
        raise ValidationError("limit", f"must be between 1 and {pages.MAX_LIMIT}")
    return value


def _time(name: str) -> float | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValidationError(name, "must be a finite time (epoch seconds or ISO 8601)")
        return value
    iso = parse_timestamp(raw, name)
    ts = dt.datetime.fromisoformat(iso)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return ts.timestamp()


def _label_query() -> dict[str, Any]:
    label = request.args.get("label") or None
    if label is not None and label not in LABELS:
        raise ValidationError("label", "must be \"spam\" or \"ham\"")
    return {"site": site_scope(current(), request.args.get("site") or None), "label": label,
            "since": _time("since"), "until": _time("until")}


def _label_ack(record) -> dict[str, Any]:
    return {"id": record.id, "site": record.site, "label": record.label, "previous": record.previous,
            "labelled_at": record.labelled_at, "labelled_by": record.labelled_by}


def _domain_error(status: int, code: str, message: str | None, field: str | None = None):
    """A handler answering `message` (None: the data store's, which depends on the method)."""
    def handle(exc: Exception) -> Response:
        headers = [("Retry-After", "5")] if status == 503 else []
        return error_response(status, code, message or store_down_message(), field=field, headers=headers)
    return handle


def _label_changed(exc: LabelConflict) -> Response:
    """409 for a conditional label write that found another label: what is stored now, and who gave it (who, only
    to moderators: a site key never learns moderators' names)."""
    principal = g.get("principal")
    if principal is None or principal.role == "site":
        exc = LabelConflict(exc.label_id, exc.current, "", exc.expected)  # said without the name
    response = jsonify({"error": {"code": "label_changed", "message": str(exc), "field": "expect",
                                  "label": exc.current, "labelled_by": exc.labelled_by or None}})
    response.status_code = 409
    return response


def init_app(app: Flask) -> None:
    # App-wide so the console's JSON calls into service.checking get the same answers; the Akismet face catches
    # these itself to answer in its own protocol.
    app.register_error_handler(checking.NotFound, _domain_error(
        404, "not_found", "no such check (it may have passed its retention)", "id"))
    app.register_error_handler(checking.StoreUnavailable, _domain_error(503, "store_unavailable", None))
    app.register_error_handler(checking.NoModel, _domain_error(
        503, "no_model", "no model is loaded yet; retry in a few seconds"))
    app.register_error_handler(LabelConflict, _label_changed)
    app.register_error_handler(checking.NotTrainable, _domain_error(
        409, "test_check", "an is_test check never becomes training data, so it cannot be labelled", "id"))
    app.register_blueprint(bp)
