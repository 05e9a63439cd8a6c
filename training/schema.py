"""The one comment schema every part of Winnow speaks.

A `Comment` is what a blog platform tells us about one submission. Validation happens once, here, and every
error names the field it is about. Nothing in this module knows about HTTP, Redis or models.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import ipaddress
import operator
import re
from typing import Any, Mapping

MAX_CONTENT_BYTES = 64 * 1024
MAX_FIELD_CHARS = 2048
MAX_POST_TEXT_CHARS = 64 * 1024

COMMENT_TYPES = frozenset(
    {"comment", "forum-post", "reply", "blog-post", "contact-form", "signup", "message", "trackback", "pingback"}
)


# Names other systems use for our fields (Akismet and WordPress spell them this way).
ALIASES = {"comment_content": "content", "comment_author": "author", "comment_author_email": "author_email",
           "comment_author_url": "author_url", "blog_lang": "language", "lang": "language"}


class ValidationError(ValueError):
    """Input that does not fit the schema. `field` names the offending field (dotted for nested input)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: a JSON object as a dict, refusing a member given twice (parsers otherwise
    keep the last one without a word)."""
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValidationError(name, "given twice in one object")
            seen.add(name)
    return members


class ContentTooLarge(ValidationError):
    """Content over MAX_CONTENT_BYTES; the web face answers 413 for it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Comment:
    content: str
    author: str = ""
    author_email: str = ""
    author_url: str = ""
    user_ip: str = ""
    user_agent: str = ""
    referrer: str = ""
    permalink: str = ""
    comment_type: str = "comment"
    site: str = ""
    language: str = ""
    created_at: str = ""  # ISO 8601, normalised to UTC when an offset is given
    post_title: str = ""
    post_text: str = ""
    honeypot: bool | None = None  # True when the site's hidden honeypot field was filled in
    time_to_submit: float | None = None  # seconds between page render and submit, when the site measures it
    user_role: str = ""  # e.g. "administrator"; trusted roles are answered ham by the service

    @classmethod
    def from_dict(cls, data: Any, *, prefix: str = "") -> "Comment":
        """Build a Comment from JSON-like input, raising ValidationError naming the first bad field.

        Unknown keys are refused so a typo in a field name is reported rather than silently ignored.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(prefix.rstrip(".") or "body", "must be a JSON object")
        values: dict[str, Any] = {}
        aliased: dict[str, str] = {}  # field -> the alias it was given as (only for aliases: they are rare)
        for key, value in data.items():
            name = ALIASES.get(key, key) if type(key) is str else key
            if name not in _FIELD_NAMES:
                raise ValidationError(prefix + str(key), "unknown field")
            if name in values:
                # An alias and its field together would let one silently override the other.
                raise ValidationError(prefix + str(key), f"given twice (also as {aliased.get(name, name)!r})")
            if name is not key:
                aliased[name] = key
            values[name] = value
        if values.get("content") is None:
            raise ValidationError(prefix + aliased.get("content", "content"), "is required")
        for name, value in values.items():
            if (name in _PLAIN_FIELDS and type(value) is str and len(value) <= MAX_FIELD_CHARS and value.isascii()
                    and "\x00" not in value):
                values[name] = value.strip()  # plain ASCII text within bounds: what _clean would return
            else:
                values[name] = _clean(name, value, prefix + aliased.get(name, name))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict without empty optional fields (round-trips through from_dict)."""
        out: dict[str, Any] = {"content": self.content}
        for name, v in zip(_OPTIONAL_FIELDS, _optional_values(self)):
            if v is None or v == "" or (name == "comment_type" and v == "comment"):
                continue
            out[name] = v
        return out

    def replace(self, **changes: Any) -> "Comment":
        """A copy with some fields changed (as dataclasses.replace, without its per-call field introspection)."""
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(f"Comment has no field(s) {', '.join(sorted(unknown))}")
        new = object.__new__(Comment)
        for set_field, value in zip(_FIELD_SETTERS, _all_values(self)):
            set_field(new, value)
        for name, value in changes.items():
            _FIELD_SETTER[name](new, value)
        return new


_FIELD_ORDER = tuple(f.name for f in dataclasses.fields(Comment))
_FIELD_NAMES = frozenset(_FIELD_ORDER)
_all_values = operator.attrgetter(*_FIELD_ORDER)
# The slots' own setters: a frozen dataclass refuses setattr, and a copy needs no validation (Comment has none).
_FIELD_SETTERS = tuple(getattr(Comment, name).__set__ for name in _FIELD_ORDER)
_FIELD_SETTER = dict(zip(_FIELD_ORDER, _FIELD_SETTERS))
_OPTIONAL_FIELDS = tuple(name for name in _FIELD_ORDER if name != "content")
_optional_values = operator.attrgetter(*_OPTIONAL_FIELDS)
# Fields whose value is checked as plain text only (no parsing or normalising beyond stripping).
_PLAIN_FIELDS = frozenset({"author", "author_url", "user_agent", "referrer", "permalink", "site", "language",
                           "post_title"})
# A dotted IPv4 address in the form ipaddress itself prints (no leading zeros): it needs no further parsing.
_CANONICAL_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)", re.ASCII)


def _clean(name: str, value: Any, field: str) -> Any:
    """The checked, normalised value of field `name`; errors are reported under `field`, the key as sent."""
    if name == "honeypot":
        if value is None or isinstance(value, bool):
            return value
        raise ValidationError(field, "must be true, false or null")
    if name == "time_to_submit":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(field, "must be a number of seconds")
        if value < 0 or value != value or value > 10**9:
            raise ValidationError(field, "must be a non-negative number of seconds")
        return float(value)
    if value is None:
        value = ""
    if type(value) is not str and not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if "\x00" in value:
        raise ValidationError(field, "must not contain NUL characters")
    if name == "content":
        if value.isascii():  # one byte per character, and always encodable
            if len(value) > MAX_CONTENT_BYTES:
                raise ContentTooLarge(field, f"is larger than {MAX_CONTENT_BYTES} bytes")
            return value
        if len(value.encode("utf-8", "surrogatepass")) > MAX_CONTENT_BYTES:
            raise ContentTooLarge(field, f"is larger than {MAX_CONTENT_BYTES} bytes")
        check_text(field, value)
        return value
    if name == "post_text":
        if len(value) > MAX_POST_TEXT_CHARS:
            raise ValidationError(field, f"is longer than {MAX_POST_TEXT_CHARS} characters")
        check_text(field, value)
        return value
    if len(value) > MAX_FIELD_CHARS:
        raise ValidationError(field, f"is longer than {MAX_FIELD_CHARS} characters")
    if not value.isascii():  # most fields are: no call on the check's path
        check_text(field, value)
    value = value.strip()
    if name in _PLAIN_FIELDS:
        return value
    if name == "user_ip" and value:
        if _CANONICAL_IPV4.fullmatch(value):
            return value
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise ValidationError(field, "is not an IPv4 or IPv6 address") from None
        # A dual-stack server reports IPv4 clients as ::ffff:a.b.c.d; they are the same client as a.b.c.d.
        mapped = getattr(ip, "ipv4_mapped", None)
        value = str(mapped or ip)
    elif name == "author_email" and value:
        local, at, domain = value.rpartition("@")
        if not (local and at and domain) or len(value.split()) > 1:
            raise ValidationError(field, "is not an email address")
    elif name == "comment_type":
        value = value.lower() or "comment"
        if len(value) > 64:
            raise ValidationError(field, "is longer than 64 characters")
    elif name == "created_at" and value:
        value = parse_timestamp(value, field)
    elif name == "user_role":
        value = value.lower()
    return value


def roles_of(user_role: str) -> list[str]:
    """The roles a comment's `user_role` names: one, or several comma-separated (WordPress sends every role of the
    user that way)."""
    return [role.strip() for role in user_role.split(",") if role.strip()]


def is_text(value: str) -> bool:
    """No lone surrogate: what a JSON escape such as "\\ud800", or a command-line byte that was no UTF-8, leaves in a
    str. Such a str is no text: nothing can store or send it on."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(field: str, value: str) -> None:
    """ValidationError naming `field` unless `value` is text (see is_text)."""
    if not is_text(value):
        raise ValidationError(field, "is not valid UTF-8 text (lone surrogate)")


def parse_timestamp(value: str, field: str = "created_at") -> str:
    """Parse ISO 8601 (a trailing Z allowed) and return it in ISO form, converted to UTC when it has an offset."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        ts = _dt.datetime.fromisoformat(text)
        if ts.tzinfo is not None:
            ts = ts.astimezone(_dt.timezone.utc)
    except ValueError:
        raise ValidationError(field, "is not an ISO 8601 timestamp") from None
    except OverflowError:  # e.g. year 9999 with a negative offset: a real date, but not one in UTC
        raise ValidationError(field, "is outside the range of dates Winnow can store") from None
    return ts.isoformat()


LABELS = ("ham", "spam")


def parse_label(value: Any, field: str = "label") -> str:
    """'spam' or 'ham' (case-insensitive); anything else is a ValidationError naming `field`."""
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return value.strip().lower()
    raise ValidationError(field, "must be \"spam\" or \"ham\"")
