"""The Akismet wire protocol (`/1.1/*`, `/1.2/*`): a blog already using an Akismet client switches by changing one URL.

Answers follow the protocol to the byte (text/plain, no trailing newline; `X-akismet-debug-help` only with
`invalid`). Whatever arrives — plugin noise, bad charsets, junk bodies — the answer is a protocol answer, never a 500.
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime as _dt
import io
import ipaddress
import json
import logging
import re
import threading
import urllib.parse
from typing import Callable, Iterable, Mapping

import redis
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service import checking
from service.context import EXTENSION, services
from training import rediskeys
from training.schema import (MAX_CONTENT_BYTES, MAX_FIELD_CHARS, ContentTooLarge, Comment, ValidationError,
                             roles_of)
from training.threads import ProcessThread

log = logging.getLogger("winnow.akismet")

bp = Blueprint("akismet", __name__)

THANKS = "Thanks for making the web a better place."
MAX_BODY_BYTES = 1024 * 1024  # a WordPress call with every HTTP_* and POST_* key is a few KB; content is <= 64 KB
MAX_FIELDS = 2000
GUARANTEED_SPAM_AUTHOR = "akismet-guaranteed-spam"
GUARANTEED_SPAM_EMAIL = "akismet-guaranteed-spam@example.com"
KEY_SHAPE = re.compile(r"^[A-Za-z0-9]{12}$")
MONTH_SHAPE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
STATS_TTL_SECONDS = 400 * 24 * 3600  # key-sites answers for the past year
COUNTERS = ("api_calls", "spam", "ham", "missed_spam", "false_positives")
_TRUE = frozenset({"1", "true", "yes", "on"})
_CONTEXT_KEY = re.compile(r"^comment_context(?:\[(\d*)\])?$")


class ProtocolAnswer(Exception):
    """An answer decided before the endpoint's work is done (bad key, missing field, oversized body)."""

    def __init__(self, response: Response):
        super().__init__(response.get_data(as_text=True))
        self.response = response


# ---------------------------------------------------------------------------------------------------------------
# Answers


def text(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """An exact text/plain body: clients compare it byte for byte, so nothing is appended."""
    resp = Response(body, status=status, mimetype="text/plain")
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def invalid(reason: str) -> Response:
    # The only answer that carries X-akismet-debug-help: some clients treat the header itself as an error.
    return text("invalid", headers={"X-akismet-debug-help": reason})


def missing(field: str) -> Response:
    # Real Akismet words it this way. 400 rather than 200: @cedx/akismet reads any 200 body but "false" as spam,
    # while every client (Python, PHP SDK, @cedx, the WordPress plugin) treats a 4xx as an error to retry/hold.
    return text(f"Missing required field: {field}.", status=400)


# ---------------------------------------------------------------------------------------------------------------
# Parameters


def _percent_encode_high_bytes(body: bytes) -> str:
    # Raw non-ASCII bytes are legal in the wild (clients that skip encoding); percent-encoding them lets the
    # declared charset decode them the same way as %XX escapes.
    return re.sub(rb"[\x80-\xff]", lambda m: b"%%%02X" % m.group()[0], body).decode("ascii")


# Python text codecs that are no charset a form is sent in: escape decoders, host-name codecs, the always-failing one.
_NOT_CHARSETS = frozenset({"undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape"})
_PRINTABLE_ASCII = "".join(map(chr, range(32, 127)))


def _codec(charset: str | None) -> str:
    """The declared charset when it can decode a form body, else utf-8 (rot13, base64, utf-16 and the like)."""
    try:
        info = codecs.lookup((charset or "utf-8").strip().strip('"'))
    except LookupError:
        return "utf-8"
    if not info._is_text_encoding or info.name in _NOT_CHARSETS:
        return "utf-8"
    # A form body is ASCII plus %XX escapes: a codec that reads ASCII differently would garble every field.
    try:
        if _PRINTABLE_ASCII.encode(info.name) != _PRINTABLE_ASCII.encode("ascii"):
            return "utf-8"
    except UnicodeError:
        return "utf-8"
    return info.name


def parse_form(body: bytes, charset: str | None = None) -> list[tuple[str, str]]:
    """Decode an x-www-form-urlencoded body in its declared charset; undecodable bytes become U+FFFD, never errors."""
    try:
        pairs = urllib.parse.parse_qsl(
            _percent_encode_high_bytes(body), keep_blank_values=True, encoding=_codec(charset), errors="replace",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:  # more than MAX_FIELDS fields
        raise ProtocolAnswer(text("Too many fields.", status=400)) from None
    return [(k.replace("\x00", ""), v.replace("\x00", "")) for k, v in pairs]


_BLOG_CHARSET_RE = re.compile(rb"(?:^|&)blog_charset=([^&]{1,64})(?:&|$)")


def _blog_charset(body: bytes) -> str | None:
    """The charset a body names in its own `blog_charset` field, for a client that leaves it out of the
    Content-Type (the header wins when both are there)."""
    match = _BLOG_CHARSET_RE.search(body)
    if match is None:
        return None
    return urllib.parse.unquote_to_bytes(match.group(1).replace(b"+", b" ")).decode("ascii", "replace").strip()


def request_params() -> "Params":
    """Every parameter of the current request: the form body first, then the query string (1.2 GETs use it)."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise ProtocolAnswer(text("Request body too large.", status=413))
    pairs: list[tuple[str, str]] = []
    if request.method == "POST":
        if request.mimetype == "multipart/form-data":
            # The same limits as a urlencoded body: any field up to the body's size, at most MAX_FIELDS fields.
            req = request._get_current_object()
            req.max_form_memory_size = MAX_BODY_BYTES
            req.max_form_parts = MAX_FIELDS
            try:
                pairs.extend((k, v) for k, v in req.form.items(multi=True))
            except RequestEntityTooLarge:  # the body is within MAX_BODY_BYTES here: too many parts
                raise ProtocolAnswer(text("Too many fields.", status=400)) from None
        else:
            body = request.stream.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise ProtocolAnswer(text("Request body too large.", status=413))
            pairs.extend(parse_form(body, request.mimetype_params.get("charset") or _blog_charset(body)))
    pairs.extend(parse_form(request.query_string))
    return Params(pairs)


class Params:
    """Akismet parameters: first value wins for scalars, every value kept for comment_context. Unknown keys (the
    WordPress plugin's HTTP_* and POST_*) are kept but never looked at beyond the few used here."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self.first: dict[str, str] = {}
        indexed: list[tuple[int, int, str]] = []
        for position, (key, value) in enumerate(pairs):
            self.first.setdefault(key, value)
            match = _CONTEXT_KEY.match(key)
            if match:
                index = match.group(1)
                # Indexed entries keep their index order; bare and [] entries keep arrival order after them.
                order = int(index) if index and len(index) < 9 else 10**9
                indexed.append((order, position, value))
        self.context = [v.strip() for _, _, v in sorted(indexed) if v.strip()]

    def get(self, key: str, default: str = "") -> str:
        return self.first.get(key, default)

    def flag(self, key: str) -> bool:
        return self.get(key).strip().lower() in _TRUE

    def __contains__(self, key: str) -> bool:
        return key in self.first


# verify-key and get-subscription name the key `key`; every other call names it `api_key`. Each takes the other
# name too, and the rate limiter reads the same one the view authenticates: a junk value under the other name must
# not move a call onto another budget.
_KEY_NAMED_KEY = frozenset({"akismet.verify_key", "akismet.get_subscription"})


def request_key(params: Params) -> str:
    """The key this request's call authenticates with (see api_key), by the parameter order of its endpoint."""
    if request.endpoint in _KEY_NAMED_KEY:
        return api_key(params, "key", "api_key")
    return api_key(params, "api_key", "key")


def api_key(params: Params, *names: str) -> str:
    """The key from the first named parameter present, else from a legacy `{key}.host` Host header."""
    for name in names:
        value = params.get(name).strip()
        if value:
            return value
    host = (request.host or "").split(":", 1)[0]
    label, dot, rest = host.partition(".")
    # Any host below the key: `{key}.rest.akismet.com`, `{key}.winnow.example.com`, and `{key}.localhost` (where
    # akismet-api's `host: "localhost:8000"` sends it). Only consulted when no key parameter was sent.
    if dot and rest and KEY_SHAPE.match(label):
        return label
    return ""


def normalise_blog(blog: str) -> str:
    """The site name key-sites reports: lower-case host (and port) plus path, without scheme or trailing slash, so
    http/https and case variants of one blog count together."""
    value = blog.strip()
    try:
        parts = urllib.parse.urlsplit(value if "//" in value else "//" + value)
        host = (parts.hostname or "").lower()
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # not a URL (an unclosed "[", a port that is no number): counted under what was sent
        return value.lower()[:MAX_FIELD_CHARS]
    return (host + parts.path.rstrip("/"))[:MAX_FIELD_CHARS] or value[:MAX_FIELD_CHARS]


def _first_ip(value: str) -> str:
    # Proxies hand some sites a forwarded list ("client, proxy"); the first address is the commenter.
    for candidate in value.split(","):
        candidate = candidate.strip()
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            continue
        return candidate
    return ""


def _date(value: str) -> str:
    """comment_date_gmt as ISO 8601 UTC; MySQL-style dates without an offset are GMT by the parameter's name."""
    text_value = value.strip()
    if not text_value:
        return ""
    if text_value.isdigit():  # some clients send a Unix timestamp
        try:
            return _dt.datetime.fromtimestamp(int(text_value), _dt.timezone.utc).isoformat()
        except (OverflowError, OSError, ValueError):
            return ""
    if text_value.endswith(("Z", "z")):
        text_value = text_value[:-1] + "+00:00"
    try:
        ts = _dt.datetime.fromisoformat(text_value)
    except ValueError:
        return ""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.timezone.utc)
    try:
        return ts.astimezone(_dt.timezone.utc).isoformat()
    except OverflowError:  # a date at the edge of the calendar with an offset: ignored like any bad date
        return ""


def _role(value: str) -> str:
    # WordPress sends every role of the user, comma-separated: all are kept, and any trusted one decides.
    return ",".join(role.lower() for role in roles_of(value))


def _honeypot(params: Params) -> bool | None:
    name = params.get("honeypot_field_name").strip()
    if name:
        return bool(params.get(name).strip())
    # The WordPress plugin's own hidden textarea, forwarded as POST_ak_hp_textarea.
    if "POST_ak_hp_textarea" in params:
        return bool(params.get("POST_ak_hp_textarea").strip())
    return None


def _truncate_utf8(value: str, limit: int) -> str:
    return value.encode("utf-8")[:limit].decode("utf-8", "ignore")


def comment_from_params(params: Params) -> Comment:
    """The Comment an Akismet call describes. Lenient by design: a field the schema refuses (a bad date, a
    malformed e-mail, an oversized value) is trimmed or dropped, never an error, so the comment is still checked."""
    fields: dict[str, object] = {
        "content": params.get("comment_content"),
        "author": params.get("comment_author"),
        "author_email": params.get("comment_author_email"),
        "author_url": params.get("comment_author_url"),
        "user_ip": _first_ip(params.get("user_ip")),
        "user_agent": params.get("user_agent"),
        "referrer": params.get("referrer") or params.get("referer"),
        "permalink": params.get("permalink"),
        "comment_type": params.get("comment_type"),
        "site": params.get("blog"),
        "language": params.get("blog_lang"),
        "created_at": _date(params.get("comment_date_gmt")),
        "honeypot": _honeypot(params),
        "user_role": _role(params.get("user_role")),
    }
    fields = {k: v for k, v in fields.items() if v not in ("", None) or k == "content"}
    for name, value in fields.items():
        if isinstance(value, str):
            value = value.replace("\x00", "")
            limit = MAX_CONTENT_BYTES if name == "content" else MAX_FIELD_CHARS
            fields[name] = _truncate_utf8(value, limit) if name == "content" else value[:limit]
    for _ in range(len(fields)):
        try:
            return Comment.from_dict(fields)
        except ContentTooLarge:
            fields["content"] = _truncate_utf8(str(fields["content"]), MAX_CONTENT_BYTES - 4)
        except ValidationError as exc:
            name = exc.field.split(".")[-1]
            if name == "content" or name not in fields:
                raise
            del fields[name]
    return Comment.from_dict({"content": fields.get("content", "")})


@dataclasses.dataclass(frozen=True)
class Call:
    """One comment-check / submit-* call, parsed."""

    key: str
    blog: str
    comment: Comment
    is_test: bool
    guid: str = ""
    reporter: str = ""
    original: str = ""  # comment_check_response: the verdict the client got, "true"/"false", when it says


def is_guaranteed_spam(comment: Comment) -> bool:
    """The protocol's test convention: this author name or email is always answered spam."""
    return (comment.author.strip().lower() == GUARANTEED_SPAM_AUTHOR
            or comment.author_email.strip().lower() == GUARANTEED_SPAM_EMAIL)


def parse_call(params: Params) -> Call:
    """Key first (an unknown caller learns nothing else), then the protocol's required fields."""
    return Call(
        key=request_key(params),
        blog=params.get("blog").strip(),
        comment=comment_from_params(params),
        is_test=params.flag("is_test"),
        guid=params.get("guid").strip()[:128],
        reporter=params.get("reporter").strip()[:200],
        original=params.get("comment_check_response").strip().lower(),
    )


# ---------------------------------------------------------------------------------------------------------------
# Per-site monthly usage (key-sites, usage-limit)


def month_of(ts: float | None = None) -> str:
    now = _dt.datetime.now(_dt.timezone.utc) if ts is None else _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    return now.strftime("%Y-%m")


class Usage:
    """Monthly per-site counters for each site key.

    Increments are summed in process memory and written by a daemon thread in one pipeline a second, so a call
    never waits for Redis and a burst of N calls costs one round trip, not N. A crash loses at most a second of
    statistics, which only feed reports; a Redis outage keeps the sums until it is back.
    """

    def __init__(self, client, *, interval: float = 1.0, max_fields: int = 100_000):
        self.redis = client
        self.interval = interval
        self.max_fields = max_fields
        self._pending: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # a reader's flush waits for one already writing, so it sees its counts
        self._wake = threading.Event()
        self._thread = ProcessThread(self._run, "winnow-akismet-usage", on_start=self._on_start)

    def count(self, key_id: str, site: str, *counters: str, ts: float | None = None) -> None:
        self._thread.ensure()
        hkey = rediskeys.AKISMET_USAGE.format(key_id=key_id, month=month_of(ts))
        with self._lock:
            for counter in counters:
                field = (hkey, f"{counter}:{site}")
                if field in self._pending or len(self._pending) < self.max_fields:
                    self._pending[field] = self._pending.get(field, 0) + 1

    def flush(self) -> bool:
        """Write what is pending now; False (sums kept) when Redis refuses."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> bool:
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return True
        try:
            pipe = self.redis.pipeline(transaction=False)
            for (hkey, field), n in batch.items():
                pipe.hincrby(hkey, field, n)
            for hkey in {h for h, _ in batch}:
                pipe.expire(hkey, STATS_TTL_SECONDS)
            pipe.execute()
            return True
        except redis.RedisError as exc:
            with self._lock:
                for field, n in batch.items():
                    self._pending[field] = self._pending.get(field, 0) + n
            log.warning("akismet usage counters not written yet: %s", exc)
            return False

    def sites(self, key_id: str, month: str) -> list[dict]:
        """Every site of the key that called in `month`, with its counters (ints), unordered."""
        self.flush()
        raw = self.redis.hgetall(rediskeys.AKISMET_USAGE.format(key_id=key_id, month=month))
        rows: dict[str, dict] = {}
        for field, value in raw.items():
            counter, _, site = field.decode("utf-8", "replace").partition(":")
            if counter in COUNTERS:
                row = rows.setdefault(site, {"site": site, **{c: 0 for c in COUNTERS}})
                row[counter] = int(value)
        return list(rows.values())

    def calls(self, key_id: str, month: str) -> int:
        return sum(row["api_calls"] for row in self.sites(key_id, month))

    def _on_start(self, forked: bool) -> None:
        if forked:  # the parent's sums are the parent's to write
            self._lock, self._flushing = threading.Lock(), threading.Lock()
            self._pending = {}

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()


# ---------------------------------------------------------------------------------------------------------------
# Endpoints (thin: parse, authenticate, call one domain function, answer)

USAGE_EXTENSION = "winnow.akismet.usage"
REF_PARAMS = ("comment_post_ID", "comment_ID", "comment_parent", "permalink")  # the platform's own ids, kept


def _usage() -> Usage:
    return current_app.extensions[USAGE_EXTENSION]


def _cached_params() -> Params:
    """The request's parameters, parsed once (the limiter's key lookup and the view both need them)."""
    cached = g.get("akismet_params")
    if cached is None:
        try:
            cached = request_params()
        except ProtocolAnswer as answer:
            cached = answer
        g.akismet_params = cached
    if isinstance(cached, ProtocolAnswer):
        raise cached
    return cached


def _authenticate(key: str):
    """The site key's record, or an `invalid` answer saying why."""
    if not key:
        named = ("key", "api_key") if request.endpoint in _KEY_NAMED_KEY else ("api_key", "key")
        raise ProtocolAnswer(invalid(f'Empty "{named[0]}" value: send your Winnow site key as {named[0]} '
                                     f'(or {named[1]}).'))
    record = services().keys.authenticate(key)
    if record is None:
        raise ProtocolAnswer(invalid("This key is not a Winnow site key, or it has been revoked."))
    if record.role != "site":
        raise ProtocolAnswer(invalid("Only site keys speak the Akismet protocol; moderator and admin tokens use "
                                     "the JSON API."))
    g.principal = record
    return record


def _require(params: Params, *fields: str) -> None:
    for field in fields:
        if not params.get(field).strip():
            raise ProtocolAnswer(missing(field))


def _refs(params: Params) -> dict[str, str]:
    refs = {name: params.get(name).strip()[:200] for name in REF_PARAMS if params.get(name).strip()}
    if params.context:  # the post's tags and categories: shown to moderators with the check
        refs["comment_context"] = ", ".join(params.context)[:500]
    return refs


def _unsure_as_spam(site: str) -> bool:
    svc = services()
    chosen = svc.sites.policy(site).unsure_as_spam
    return bool(svc.settings.akismet_unsure_as_spam if chosen is None else chosen)


def _answer(comment: Comment, verdict: str, discard: bool, site: str) -> tuple[bool, bool]:
    """(spam, discard) as comment-check answers them for a verdict of the JSON API's kind."""
    if "administrator" in roles_of(comment.user_role):  # the protocol's own rule, whatever the site trusts
        return False, False
    if is_guaranteed_spam(comment):
        return True, False
    if verdict == "unsure":
        return _unsure_as_spam(site), False
    return verdict == "spam", discard


def _calls(required: tuple[str, ...]) -> tuple[Params, Call, object]:
    params = _cached_params()
    call = parse_call(params)
    record = _authenticate(call.key)
    _require(params, *required)
    return params, call, record


@bp.route("/1.1/verify-key", methods=["POST"])
def verify_key() -> Response:
    params = _cached_params()
    _authenticate(request_key(params))
    _require(params, "blog")
    return text("valid")


@bp.route("/1.1/comment-check", methods=["POST"])
def comment_check() -> Response:
    params, call, record = _calls(("blog", "user_ip"))

    def told(verdict: str) -> str:  # stored as `answered`: what this face tells the client, spam or ham
        return "spam" if _answer(call.comment, verdict, False, record.site)[0] else "ham"

    # Checks belong to the key's own site; `blog` only says which of the key's sites called (for key-sites). The
    # protocol's guaranteed-spam author is a test convention: answered, never queued or trained on, like is_test.
    result = checking.check(call.comment, site=record.site, principal=record,
                            is_test=call.is_test or is_guaranteed_spam(call.comment), source="akismet",
                            ids=_refs(params), told=told)
    spam, discard = _answer(call.comment, result.verdict, result.discard, record.site)
    _usage().count(record.id, normalise_blog(call.blog), "api_calls", "spam" if spam else "ham")
    headers = {"X-akismet-guid": result.id}
    if spam and discard:
        headers["X-akismet-pro-tip"] = "discard"
    return text("true" if spam else "false", headers=headers)


def _submit(label: str) -> Response:
    params, call, record = _calls(("blog", "user_ip"))
    moderator = f"{call.reporter} via Akismet ({record.id})" if call.reporter else record
    original = call.original  # what the client was told: "true"/"false", when it says
    stored = False
    about_test = call.is_test  # a submission about an is_test check is no mistake to count either
    check = None
    if call.guid:
        try:
            check = checking.get_check(call.guid, site_scope=record.site)
        except checking.NotFound:
            pass  # expired or unknown: fall back to the comment in the parameters
    elif call.comment.content.strip():
        # No guid (the Python `akismet` client cannot send one): the comment's own newest check, when the fields
        # are those comment-check was sent, so the report labels that check and takes it out of the queue.
        check = checking.newest_check_of(call.comment, site=record.site)
    if check is not None:  # what comment-check answered for it, by the same rules
        original = "true" if _answer(check.comment, check.answered, check.discard, record.site)[0] else "false"
        about_test = about_test or check.is_test
        if not (check.is_test or call.is_test):
            standing = [] if call.guid else checking.standing_labels_of(check)
            if standing and check.id not in standing:
                # Labelled already by an earlier check of it (then checked again): that label changes.
                checking.relabel(standing[0], label, moderator=moderator, site_scope=record.site, source="akismet",
                                 of_check=True)
            else:
                checking.label_check(check.id, label, moderator=moderator, site_scope=record.site,
                                     source="akismet")
        stored = True
    elif call.guid and not call.is_test:
        # The check is past its retention, but a submission about it may have labelled it then: that label is
        # changed (and audited), not joined by a second one under the comment's own id.
        try:
            checking.relabel(call.guid, label, moderator=moderator, site_scope=record.site, source="akismet",
                             of_check=True)
            stored = True
        except checking.NotFound:
            pass
    if not stored and not call.comment.content.strip():
        # Nothing to learn from: the check it names is unknown (or expired) and the comment was not sent again.
        answer = missing("comment_content")
        if call.guid:
            answer.set_data(answer.get_data() + b" The guid names no check of this key's site that is still kept.")
        raise ProtocolAnswer(answer)
    if not stored and not call.is_test:
        checking.label_new(call.comment, label, moderator=moderator, site=record.site, source="akismet")
    # A submission reports a mistake unless the client says (or the check shows) it was answered that way already.
    agrees = original == ("true" if label == "spam" else "false")
    if not about_test and not agrees:
        _usage().count(record.id, normalise_blog(call.blog), "missed_spam" if label == "spam" else "false_positives")
    return text(THANKS)


@bp.route("/1.1/submit-spam", methods=["POST"])
def submit_spam() -> Response:
    return _submit("spam")


@bp.route("/1.1/submit-ham", methods=["POST"])
def submit_ham() -> Response:
    return _submit("ham")


@bp.route("/1.2/usage-limit", methods=["GET", "POST"])
def usage_limit() -> Response:
    record = _authenticate(request_key(_cached_params()))
    usage = _usage().calls(record.id, month_of())
    # Winnow meters no monthly quota (the per-minute rate limit is answered with 429), so there is no limit to near.
    return _json({"limit": "none", "usage": usage, "percentage": "0.00", "throttled": False})


ORDERS = {"total": "api_calls", "spam": "spam", "ham": "ham", "missed_spam": "missed_spam",
          "false_positives": "false_positives"}
CSV_HEADER = ("Site", "Total API Calls", "Spam", "Ham", "Missed Spam", "False Positives", "Is Revoked")


@bp.route("/1.2/key-sites", methods=["GET", "POST"])
def key_sites() -> Response:
    params = _cached_params()
    record = _authenticate(request_key(params))
    month = params.get("month").strip() or month_of()
    if not MONTH_SHAPE.match(month):
        return text("Invalid month: use YYYY-MM.", status=400)
    order = params.get("order").strip() or "total"
    if order not in ORDERS:
        return text("Invalid order: use one of " + ", ".join(ORDERS) + ".", status=400)
    fmt = params.get("format").strip().lower() or "json"
    if fmt not in ("json", "csv"):
        return text("Invalid format: use json or csv.", status=400)
    limit, offset = _integer(params, "limit", 500, 1, 10_000), _integer(params, "offset", 0, 0, 10**9)
    needle = params.get("filter").strip().lower()
    rows = [r for r in _usage().sites(record.id, month) if needle in r["site"].lower()]
    rows.sort(key=lambda r: (-r[ORDERS[order]], r["site"]))
    page = [{**r, "is_revoked": record.revoked} for r in rows[offset:offset + limit]]
    if fmt == "csv":
        return _csv(record.id, month, page, limit, offset, len(rows))
    return _json({month: page, "limit": limit, "offset": offset, "total": len(rows)})


def _integer(params: Params, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name).strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:  # "²" is a digit to isdigit(), not to int()
        raise ProtocolAnswer(text(f"Invalid {name}: use a whole number.", status=400))
    return max(low, min(high, int(raw)))


def _spreadsheet_safe(value: str) -> str:
    # A site name is whatever a client sent as `blog`; one starting like a formula must stay text in a spreadsheet.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _csv(key_id: str, month: str, rows: list[dict], limit: int, offset: int, total: int) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    out.write(f"Active sites for {key_id} during {month} (limit:{limit}, offset: {offset}, total: {total})\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow([_spreadsheet_safe(r["site"]), r["api_calls"], r["spam"], r["ham"], r["missed_spam"],
                         r["false_positives"], "true" if r["is_revoked"] else "false"])
    return Response(out.getvalue().rstrip("\n"), mimetype="text/csv")


def _json(body: object) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), mimetype="application/json")


# The WordPress plugin's settings page asks these before it shows a key as working.


@bp.route("/1.1/test", methods=["GET", "POST"])
def connectivity_test() -> Response:
    return text("connected")


@bp.route("/1.1/get-subscription", methods=["POST"])
def get_subscription() -> Response:
    record = _authenticate(request_key(_cached_params()))
    return _json({"status": "active", "account_type": "winnow-site-key", "account_id": record.id,
                  "account_name": record.name or record.site, "limit_reached": False})


_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@bp.route("/1.1/<path:endpoint>", methods=_ALL_METHODS)
@bp.route("/1.2/<path:endpoint>", methods=_ALL_METHODS)
def _elsewhere(endpoint: str) -> Response:
    """Unknown endpoints and wrong methods under the protocol's paths, answered as text rather than the JSON API's
    error shape (a more specific route always wins when the method fits)."""
    version = request.path.split("/")[1]
    allowed = {rule.rule: sorted(rule.methods - {"HEAD", "OPTIONS"}) for rule in current_app.url_map.iter_rules()
               if rule.endpoint.startswith(bp.name + ".") and "<" not in rule.rule}
    methods = allowed.get(f"/{version}/{endpoint}")
    if methods:
        return text("Method not allowed: use " + " or ".join(methods) + ".", status=405,
                    headers={"Allow": ", ".join(methods)})
    return text("Not found.", status=404)


# ---------------------------------------------------------------------------------------------------------------
# Errors: this face answers in the protocol's text/plain, never with the JSON API's error shape or an HTML page


@bp.errorhandler(ProtocolAnswer)
def _protocol_answer(answer: ProtocolAnswer) -> Response:
    return answer.response


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        return text("Request body too large.", status=413)
    kept = {h: v for h, v in exc.get_response().headers.items() if h in ("Retry-After", "Allow")}
    return text(exc.name + ".", status=exc.code or 400, headers=kept)


@bp.errorhandler(checking.StoreUnavailable)
@bp.errorhandler(redis.RedisError)
def _unavailable(exc: Exception) -> Response:
    # Nothing was stored. Every client treats a 5xx as "try again": the WordPress plugin holds the comment for
    # moderation and rechecks it later, the SDKs raise. X-akismet-error is the protocol's own "anticipated error"
    # (the WordPress plugin and Discourse's hold the comment for a moderator on it, whatever the status).
    log.warning("akismet %s unavailable: %s", request.path, exc)
    return text("Service temporarily unavailable; retry later.", status=503,
                headers={"Retry-After": "5", "X-akismet-error": "Winnow's store is unavailable; retry later."})


def _limiter_principal(fallback: Callable[[], object] | None) -> Callable[[], object]:
    """The limiter's principal hook, taught to find an Akismet call's key in its form body (no Bearer header here),
    so each site key has its own budget rather than sharing one per client address."""

    def principal():
        if request._get_current_object().blueprint != bp.name:
            return fallback() if fallback is not None else None
        try:
            params = _cached_params()
            record = services().keys.authenticate(request_key(params))
        except (ProtocolAnswer, redis.RedisError):
            return None
        return record if record is not None and record.role == "site" else None

    return principal


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.extensions[USAGE_EXTENSION] = Usage(app.extensions[EXTENSION].redis)
    app.extensions["winnow.authenticate"] = _limiter_principal(app.extensions.get("winnow.authenticate"))
