"""The OpenAPI 3 document for Winnow's HTTP faces, kept as data and served at GET /api/v1/openapi.json.

tests/test_ops.py holds it to the app: every /api/v1 route must be described here with the roles its guard asks for.
"""
from __future__ import annotations

import copy
from typing import Any

from training.schema import COMMENT_TYPES, MAX_CONTENT_BYTES

ROLES_KEY = "x-winnow-roles"  # the key roles an operation accepts (admin always may)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "") -> dict:
    out: dict[str, Any] = {"content": {"application/json": {"schema": schema}}}
    if description:
        out["description"] = description
    return out


def _ok(schema: dict, description: str = "OK") -> dict:
    return _json(schema, description)


_ERR = {"$ref": "#/components/responses/Error"}
_ERRORS = {"400": _ERR, "401": _ERR, "403": _ERR, "413": _ERR, "429": {"$ref": "#/components/responses/RateLimited"},
           "503": _ERR}


def _op(summary: str, roles: tuple[str, ...], responses: dict, *, body: dict | None = None,
        params: list[dict] | None = None, tag: str = "api", description: str = "") -> dict:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], ROLES_KEY: list(roles),
                          "security": [{"bearerAuth": []}, {"consoleSession": []}],
                          "responses": {**responses, **_ERRORS}}
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = {"required": True, **body}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _query(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"},
            "description": description}


_PAGING = [_query("cursor", "Opaque cursor from the previous page's next_cursor."),
           _query("limit", "Page size, 1 to 1000 (default 50).", {"type": "integer", "minimum": 1, "maximum": 1000})]
_SITE_Q = _query("site", "Only this site (a moderator token bound to one site gets its own site regardless).")
_LABEL_FILTERS = [_SITE_Q, _query("label", "Only this label.", {"type": "string", "enum": ["spam", "ham"]}),
                  _query("since", "Labelled at or after: ISO 8601 or Unix seconds."),
                  _query("until", "Labelled before: ISO 8601 or Unix seconds.")]
_REASON_BODY = {"required": False, **_json({"type": "object", "additionalProperties": False,
                                            "properties": {"reason": {"type": "string", "maxLength": 500}}})}

_COMMENT_FIELDS: dict[str, dict] = {
    "content": {"type": "string", "description": f"The comment text (at most {MAX_CONTENT_BYTES} bytes UTF-8)."},
    "author": {"type": "string"},
    "author_email": {"type": "string"},
    "author_url": {"type": "string"},
    "user_ip": {"type": "string", "description": "The commenter's IPv4 or IPv6 address."},
    "user_agent": {"type": "string"},
    "referrer": {"type": "string"},
    "permalink": {"type": "string", "description": "URL of the page the comment was posted on."},
    "comment_type": {"type": "string", "default": "comment", "description": "One of " + ", ".join(sorted(COMMENT_TYPES))
                     + " (others are accepted and kept)."},
    "site": {"type": "string", "description": "Site URL; a site key's own site when omitted."},
    "language": {"type": "string"},
    "created_at": {"type": "string", "format": "date-time"},
    "post_title": {"type": "string"},
    "post_text": {"type": "string"},
    "honeypot": {"type": ["boolean", "null"], "description": "True when the site's hidden honeypot field was filled: the comment is then answered spam (unless a trusted role), with the reason \"honeypot filled\"."},
    "time_to_submit": {"type": ["number", "null"], "minimum": 0,
                       "description": "Seconds between page render and submit."},
    "user_role": {"type": "string", "description": "The author's role on the site, or several comma-separated; a comment with any of the site's trusted roles is answered ham."},
}

_SCHEMAS: dict[str, dict] = {
    "Comment": {"type": "object", "required": ["content"], "additionalProperties": False,
                "properties": _COMMENT_FIELDS,
                "description": "Akismet/WordPress names (comment_content, comment_author, ...) are accepted too."},
    "CheckRequest": {"allOf": [_ref("Comment"), {"type": "object", "properties": {
        "is_test": {"type": "boolean", "default": False, "description": "Answered but never used as training data."},
        "ids": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 10,
                "description": "The platform's own ids for this comment (e.g. {\"wordpress\": \"123\"})."}}}]},
    "Reason": {"type": "object", "properties": {"signal": {"type": "string"}, "weight": {"type": "number"}}},
    "CheckResult": {"type": "object", "properties": {
        "id": {"type": "string", "description": "Label it later with POST /api/v1/comments/{id}/label."},
        "verdict": {"type": "string", "enum": ["ham", "unsure", "spam"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "Calibrated spam probability."},
        "discard": {"type": "boolean", "description": "Spam so sure it need not be shown to a moderator."},
        "reasons": {"type": "array", "items": _ref("Reason")},
        "model_version": {"type": "string"},
        "shadow": {"type": "boolean", "description": "Shadow mode: answered ham, real verdict recorded."}}},
    "CheckRecord": {"type": "object", "properties": {
        "id": {"type": "string"}, "site": {"type": "string"}, "comment": _ref("Comment"),
        "verdict": {"type": "string"}, "answered": {"type": "string"}, "score": {"type": "number"},
        "discard": {"type": "boolean"}, "model_version": {"type": "string"}, "created_at": {"type": "number"},
        "reasons": {"type": "array", "items": _ref("Reason")}, "shadow": {"type": "boolean"},
        "trusted": {"type": "boolean"}, "is_test": {"type": "boolean"}, "source": {"type": "string"},
        "refs": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "LabelRequest": {"type": "object", "required": ["label"], "additionalProperties": False,
                     "properties": {"label": {"type": "string", "enum": ["spam", "ham"]},
                                    "expect": {"type": ["string", "null"], "enum": ["spam", "ham", None],
                                               "description": "Store the label only if the comment is, now, "
                                               "unlabelled (null) or labelled this; else 409 label_changed "
                                               "naming the label stored and who gave it."},
                                    "expect_at": {"type": "number", "description": "With a label in `expect`: "
                                                  "the labelled_at that label must still carry."}}},
    "LabelAck": {"type": "object", "properties": {
        "id": {"type": "string"}, "site": {"type": "string"}, "label": {"type": "string", "enum": ["spam", "ham"]},
        "previous": {"type": ["string", "null"], "description": "The label this one replaced, if any."},
        "labelled_at": {"type": "number"}, "labelled_by": {"type": "string"}}},
    "LabelRecord": {"type": "object", "properties": {
        "id": {"type": "string"}, "site": {"type": "string"}, "label": {"type": "string", "enum": ["spam", "ham"]},
        "comment": _ref("Comment"), "labelled_at": {"type": "number"}, "labelled_by": {"type": "string"},
        "source": {"type": "string"}, "check_id": {"type": ["string", "null"]},
        "verdict": {"type": ["string", "null"]}, "score": {"type": ["number", "null"]},
        "created_at": {"type": "number"}}},
    "LabelBatch": {"type": "object", "required": ["items"], "additionalProperties": False, "properties": {
        "site": {"type": "string", "description": "Default site for items that name none."},
        "items": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"allOf": [
            _ref("Comment"), {"type": "object", "required": ["label"],
                              "properties": {"label": {"type": "string", "enum": ["spam", "ham"]}}}]}}}},
    "LabelPage": {"type": "object", "properties": {"items": {"type": "array", "items": _ref("LabelRecord")},
                                                   "next_cursor": {"type": ["string", "null"]}}},
    "QueuePage": {"type": "object", "properties": {"items": {"type": "array", "items": _ref("CheckRecord")},
                                                   "next_cursor": {"type": ["string", "null"]}}},
    "SitePolicy": {"type": "object", "properties": {
        "site": {"type": "string"}, "unsure_threshold": {"type": "number"}, "spam_threshold": {"type": "number"},
        "discard_threshold": {"type": "number"}, "shadow": {"type": "boolean"},
        "trusted_roles": {"type": "array", "items": {"type": "string"}},
        "unsure_as_spam": {"type": ["boolean", "null"], "description": (
            "Whether the Akismet face answers `true` for an unsure comment; null follows the deployment's "
            "WINNOW_AKISMET_UNSURE_AS_SPAM.")},
        "overridden": {"type": "array", "items": {"type": "string"},
                       "description": "Settings this site overrides; the rest are the deployment defaults."},
        "warnings": {"type": "array", "items": {"type": "string"}, "description": (
            "Set when no site key belongs to this site and no check or label for it was seen in the last year "
            "(settings apply only to checks of exactly this site), naming a keyed site of another scheme.")}}},
    "SitePolicyUpdate": {"type": "object", "description": "Fields to change; null resets one to the default.",
                         "properties": {"unsure_threshold": {"type": ["number", "null"]},
                                        "spam_threshold": {"type": ["number", "null"]},
                                        "discard_threshold": {"type": ["number", "null"]},
                                        "shadow": {"type": ["boolean", "null"]},
                                        "trusted_roles": {"type": ["array", "null"], "items": {"type": "string"}},
                                        "unsure_as_spam": {"type": ["boolean", "null"]}}},
    "ModelVersion": {"type": "object", "additionalProperties": True, "description": (
        "A registered version's metadata: version, created_at, metrics, data counts, who or what promoted it and "
        "why; `serving` marks the current one.")},
    "ModelList": {"type": "object", "properties": {
        "current": {"type": ["string", "null"]}, "versions": {"type": "array", "items": _ref("ModelVersion")},
        "history": {"type": "array", "items": {"type": "object"}, "description": "Promotions and rollbacks."},
        "runs": {"type": "array", "items": {"type": "object"}, "description": "Recent retrain runs and gates."}}},
    "PromoteEvent": {"type": "object", "properties": {
        "kind": {"type": "string"}, "version": {"type": "string"}, "previous": {"type": ["string", "null"]},
        "by": {"type": "string"}, "reason": {"type": "string"}}},
    "JobAccepted": {"type": "object", "properties": {"job_id": {"type": "string"}, "status_url": {"type": "string"}}},
    "Job": {"type": "object", "properties": {
        "id": {"type": "string"}, "status": {"type": "string"}, "progress": {"type": "number"},
        "stage": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]},
        "requested_by": {"type": ["string", "null"]}, "enqueued_at": {"type": ["string", "null"]},
        "started_at": {"type": ["string", "null"]}, "ended_at": {"type": ["string", "null"]},
        "result": {}, "error": {"type": ["string", "null"]},
        "continued_as": {"type": ["string", "null"],
                         "description": "The job this retrain continues as, after its worker died mid-run."}}},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "field": {"type": "string", "description": "The offending field, when the error is about one."},
            "fields": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "message": {"type": "string"}}}}}}}},
    "Readiness": {"type": "object", "properties": {
        "ready": {"type": "boolean"},
        "checks": {"type": "object", "additionalProperties": {"type": "object"}},
        "failed": {"type": "array", "items": {"type": "string"}}}},
}

_SITE_ROLES = ("site", "moderator")
_MOD = ("moderator",)
_ADMIN = ("admin",)
_GLOBAL_ONLY = "One model serves every site: a key bound to one site gets 403 (forbidden_site)."

_API_PATHS: dict[str, dict] = {
    "/api/v1/check": {"post": _op(
        "Check one comment", _SITE_ROLES, {"200": _ok(_ref("CheckResult"))},
        body=_json(_ref("CheckRequest")),
        description="Scores the comment under its site's thresholds and stores it (retention-limited) so it can be "
                    "labelled by id. Bodies over 1 MiB or content over 64 KiB answer 413.")},
    "/api/v1/check/batch": {"post": _op(
        "Check up to 100 comments", _SITE_ROLES,
        {"200": _ok({"type": "object", "properties": {"results": {"type": "array", "items": _ref("CheckResult")}}})},
        body=_json({"type": "object", "required": ["comments"], "properties": {
            "comments": {"type": "array", "minItems": 1, "maxItems": 100, "items": _ref("CheckRequest")},
            "is_test": {"type": "boolean"}}}))},
    "/api/v1/checks/{check_id}": {"get": _op(
        "A stored check", _SITE_ROLES, {"200": _ok(_ref("CheckRecord")), "404": _ERR},
        params=[_path_param("check_id", "The id a check answered.")])},
    "/api/v1/comments/{check_id}/label": {"post": _op(
        "Label a checked comment", _SITE_ROLES, {"200": _ok(_ref("LabelAck")), "404": _ERR, "409": _ERR},
        body=_json(_ref("LabelRequest")), params=[_path_param("check_id", "The id a check answered.")],
        description="The moderator is the token's key. A second label relabels; the audit trail keeps both. "
                    "With `expect`, only while the label is still what the caller saw (409 otherwise). "
                    "Acknowledged only once Redis accepted it (503 otherwise).")},
    "/api/v1/labels": {
        "post": _op("Label comments never checked (up to 1,000)", _MOD,
                    {"201": _ok({"type": "object", "properties": {
                        "stored": {"type": "integer"}, "labels": {"type": "array", "items": _ref("LabelAck")}}},
                        "Stored")},
                    body=_json(_ref("LabelBatch"))),
        "get": _op("List labels", _MOD, {"200": _ok(_ref("LabelPage"))}, params=_LABEL_FILTERS + _PAGING)},
    "/api/v1/labels/export": {"get": _op(
        "Export labels as JSON Lines", _MOD,
        {"200": {"description": "One LabelRecord per line.",
                 "content": {"application/x-ndjson": {"schema": _ref("LabelRecord")}}}},
        params=_LABEL_FILTERS)},
    "/api/v1/labels/{label_id}": {"get": _op(
        "A label with its audit trail", _MOD,
        {"200": _ok({"allOf": [_ref("LabelRecord"), {"type": "object", "properties": {
            "audit": {"type": "array", "items": {"type": "object"}}}}]}), "404": _ERR},
        params=[_path_param("label_id", "A label id.")], description=(
            "A label that was taken back (undone) answers its id, site and audit trail with \"label\": null."))},
    "/api/v1/queue": {"get": _op(
        "Checked comments awaiting a label, most uncertain first", _MOD, {"200": _ok(_ref("QueuePage"))},
        params=[_SITE_Q, _query("verdict", "Only this verdict.", {"type": "string", "enum": ["ham", "unsure", "spam"]}),
                *_PAGING])},
    "/api/v1/sites/{site}/settings": {
        "get": _op("A site's thresholds, shadow mode and trusted roles", _MOD, {"200": _ok(_ref("SitePolicy"))},
                   params=[_path_param("site", "Site URL or host, e.g. blog.example.com.")]),
        "put": _op("Change a site's settings", _ADMIN, {"200": _ok(_ref("SitePolicy"))},
                   body=_json(_ref("SitePolicyUpdate")),
                   params=[_path_param("site", "Site URL or host, e.g. blog.example.com.")])},
    "/api/v1/models": {"get": _op("Model versions, the serving one, promotion history and recent retrains", _MOD,
                                  {"200": _ok(_ref("ModelList"))}, tag="models")},
    "/api/v1/models/{version}": {"get": _op(
        "One model version's metadata", _MOD, {"200": _ok(_ref("ModelVersion")), "404": _ERR}, tag="models",
        params=[_path_param("version", "e.g. v12")])},
    "/api/v1/models/{version}/promote": {"post": _op(
        "Serve this version everywhere (within seconds)", _ADMIN,
        {"200": _ok(_ref("PromoteEvent")), "404": _ERR, "409": _ERR}, body=_REASON_BODY, tag="models",
        params=[_path_param("version", "e.g. v12")], description=(
            "409 when the version's artifact cannot be loaded here (not signed by this deployment, or written by "
            "another scikit-learn). " + _GLOBAL_ONLY))},
    "/api/v1/models/rollback": {"post": _op(
        "Serve again the version the serving one replaced (a second rollback steps back once more)", _ADMIN, {"200": _ok(_ref("PromoteEvent")), "409": _ERR},
        body=_REASON_BODY, tag="models", description=_GLOBAL_ONLY)},
    "/api/v1/models/retrain": {"post": _op(
        "Retrain now (one run at a time; a request during a run queues exactly one follow-up)", _MOD,
        {"202": _ok(_ref("JobAccepted"), "Accepted; poll status_url")}, body=_REASON_BODY, tag="models",
        description=_GLOBAL_ONLY)},
    "/api/v1/jobs/{job_id}": {"get": _op(
        "A background job's status and progress", _MOD, {"200": _ok(_ref("Job")), "404": _ERR}, tag="models",
        params=[_path_param("job_id", "The job_id a retrain answered, or a `here-N` run a pending job "
                                                "waits for (`winnow retrain --now`, in a shell).")])},
}


def _public(summary: str, responses: dict, description: str = "") -> dict:
    op: dict[str, Any] = {"summary": summary, "tags": ["operations"], "security": [], "responses": responses}
    if description:
        op["description"] = description
    return op


_OPS_PATHS: dict[str, dict] = {
    "/api/v1/openapi.json": {"get": _public("This document", {"200": _ok({"type": "object"})})},
    "/healthz": {"get": _public("Liveness: the process answers (no Redis involved)", {
        "200": _ok({"type": "object", "properties": {"alive": {"type": "boolean"}}})})},
    "/readyz": {"get": _public("Readiness: Redis answers and a model is loaded", {
        "200": _ok(_ref("Readiness"), "Ready"), "503": _ok(_ref("Readiness"), "Not ready; `failed` names the checks")})},
    "/metrics": {"get": _public("Prometheus metrics, aggregated over every web worker of this node", {
        "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    "/ping": {"get": _public("A bare answer for load tests", {
        "200": {"description": "pong", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
}

_AKISMET_FORM = {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["api_key"], "additionalProperties": True,
    "properties": {"api_key": {"type": "string", "description": "A Winnow site key (12 characters)."},
                   "blog": {"type": "string", "description": "The site URL."}}}}}}
_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}


def _akismet(summary: str, answers: str, methods: tuple[str, ...] = ("post",)) -> dict:
    op = {"summary": summary, "tags": ["akismet"], "security": [],
          "description": "The Akismet wire protocol; see Akismet's API documentation. Authenticated by `api_key`.",
          "requestBody": {"required": True, **_AKISMET_FORM},
          "responses": {"200": {"description": answers, **_TEXT},
                        "429": {"description": "Rate limited; see Retry-After", **_TEXT}}}
    return {m: op for m in methods}


_AKISMET_PATHS: dict[str, dict] = {
    "/1.1/verify-key": _akismet("Verify a key", "`valid` or `invalid`"),
    "/1.1/comment-check": _akismet("Check a comment", "`true` (spam) or `false`; X-akismet-pro-tip: discard"),
    "/1.1/submit-spam": _akismet("Report missed spam", "`Thanks for making the web a better place.`"),
    "/1.1/submit-ham": _akismet("Report a false positive", "`Thanks for making the web a better place.`"),
    "/1.1/test": _akismet("Connectivity test", "A short text answer", ("get", "post")),
    "/1.1/get-subscription": _akismet("The key's subscription", "JSON"),
    "/1.2/usage-limit": _akismet("Usage this month", "JSON", ("get", "post")),
    "/1.2/key-sites": _akismet("Per-site statistics", "JSON or CSV", ("get", "post")),
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Winnow",
        "version": "1",
        "description": (
            "Self-hosted comment spam filter. Send comments to /api/v1/check with a site key, label what the "
            "model got wrong, and Winnow retrains from those labels. Every error is JSON "
            "`{\"error\": {\"code\", \"message\", \"field\"}}` naming the offending field. Requests are limited per "
            "key (429 with Retry-After). Role names in `x-winnow-roles`; an admin token may do everything."),
    },
    "tags": [
        {"name": "api", "description": "Checks, labels, the moderation queue and site settings."},
        {"name": "models", "description": "The model registry and retrain jobs."},
        {"name": "operations", "description": "Probes, metrics and this document; no key needed."},
        {"name": "akismet", "description": "The Akismet protocol, for existing Akismet clients and plugins."},
    ],
    "paths": {**_API_PATHS, **_OPS_PATHS, **_AKISMET_PATHS},
    "components": {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": (
                "A 12-character site key (check and label its own site) or a moderator/admin token (wm_...). "
                "Make one with `winnow keys create --site URL [--role site|moderator|admin]`.")},
            "consoleSession": {"type": "apiKey", "in": "cookie", "name": "session", "description": (
                "The moderator console's signed session; state-changing calls also need the X-CSRF-Token header.")},
        },
        "schemas": _SCHEMAS,
        "responses": {
            "Error": _json(_ref("Error"), "An error naming its field when it is about one."),
            "RateLimited": {**_json(_ref("Error"), "Too many requests for this key."), "headers": {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until the window resets."}}},
        },
    },
}


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: `/sites/<path:site>/x` → `/sites/{site}/x`."""
    out, i = [], 0
    while i < len(rule):
        if rule[i] == "<":
            end = rule.index(">", i)
            out.append("{" + rule[i + 1:end].split(":")[-1] + "}")
            i = end + 1
        else:
            out.append(rule[i])
            i += 1
    return "".join(out)


def document() -> dict[str, Any]:
    """A copy of the document, so a caller may add servers or examples without touching the original."""
    return copy.deepcopy(_DOCUMENT)
