"""The model registry and retrain jobs over HTTP, under /api/v1: moderators read, admins change.

Handlers only parse, call training.registry / training.jobs, and serialise.
"""
from __future__ import annotations

import re

import redis as redis_lib
from flask import Blueprint, jsonify, url_for

from service.auth import current, requires
from service.context import services
from service.http import ApiError, error_response, json_body
from training import jobs
from training.registry import Registry, RegistryError, UnknownVersion

blueprint = Blueprint("models_api", __name__, url_prefix="/api/v1")

_VERSION = re.compile(r"^v[0-9]{1,12}$")
# Retrain jobs only: the queue also runs the clock's own jobs, whose ids and results are nobody's business.
_JOB_ID = re.compile(r"^(retrain|here)-[0-9]{1,18}$")  # here-N: a run in a shell (winnow retrain --now)
_MAX_REASON = 500


def _registry() -> Registry:
    s = services()
    return Registry.from_settings(s.redis, s.settings)


def _who() -> str:
    p = current()
    return f"{p.role}:{p.name or p.id}"


def _reason(body: dict) -> str:
    reason = body.get("reason", "")
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ApiError(400, "invalid", "must be a string", field="reason")
    if len(reason) > _MAX_REASON:
        raise ApiError(400, "invalid", f"must be at most {_MAX_REASON} characters", field="reason")
    return reason.strip()


def _body(*allowed: str) -> dict:
    allowed = ("reason",) + allowed
    body = json_body(required=False)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "must be a JSON object", field="body")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, "invalid", "unknown field", field=unknown[0])
    return body


def _global_only() -> None:
    # One model serves every site: a key bound to one site must not choose it or make it retrain.
    if current().site:
        raise ApiError(403, "forbidden_site", "a key bound to one site cannot change the model every site shares")


def _check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise ApiError(404, "not_found", f"no model version {version!r}", field="version")
    return version


@blueprint.errorhandler(redis_lib.RedisError)
def _redis_down(exc):
    return error_response(503, "store_unavailable", "the model registry (Redis) is unavailable; try again shortly",
                          headers=[("Retry-After", "5")])


@blueprint.get("/models")
@requires("moderator")
def list_models():
    registry = _registry()
    versions = registry.list()
    return jsonify({"current": registry.current_version(), "versions": versions,
                    "history": registry.history(20), "runs": jobs.recent_runs(services().redis, 20)})


@blueprint.get("/models/<version>")
@requires("moderator")
def get_model(version: str):
    try:
        return jsonify(_registry().get(_check_version(version)))
    except UnknownVersion:
        raise ApiError(404, "not_found", f"no model version {version!r}", field="version") from None


@blueprint.post("/models/<version>/promote")
@requires("admin")
def promote_model(version: str):
    _global_only()
    reason = _reason(_body()) or "promoted by hand"
    try:
        return jsonify(_registry().promote(_check_version(version), by=_who(), reason=reason))
    except UnknownVersion:
        raise ApiError(404, "not_found", f"no model version {version!r}", field="version") from None
    except RegistryError as exc:
        raise ApiError(409, "conflict", str(exc), field="version") from None


@blueprint.post("/models/rollback")
@requires("admin")
def rollback_model():
    _global_only()
    reason = _reason(_body())
    try:
        return jsonify(_registry().rollback(by=_who(), reason=reason))
    except RegistryError as exc:
        raise ApiError(409, "conflict", str(exc)) from None


# Moderators may ask for a retrain: the gate never promotes a worse model and only one run goes at a time, so
# asking is safe; choosing which version serves (promote, rollback) stays with admins.
@blueprint.post("/models/retrain")
@requires("moderator")
def retrain_model():
    _global_only()
    body = _body("full")
    reason = _reason(body) or "asked for by hand"
    full = body.get("full", False)
    if not isinstance(full, bool):
        raise ApiError(400, "invalid", "must be true or false", field="full")
    s = services()
    job_id = jobs.enqueue_retrain(s.redis, s.settings, reason=reason, by=_who(), full=full)
    response = jsonify({"job_id": job_id, "status_url": url_for("models_api.get_job", job_id=job_id)})
    response.status_code = 202
    response.headers["Location"] = url_for("models_api.get_job", job_id=job_id)
    return response


@blueprint.get("/jobs/<job_id>")
@requires("moderator")
def get_job(job_id: str):
    status = jobs.job_status(services().redis, job_id) if _JOB_ID.match(job_id) else None
    if status is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}", field="job_id")
    return jsonify(status)


def init_app(app) -> None:
    app.register_blueprint(blueprint)
