"""The comment schema: every refusal names its field, and what is accepted round-trips unchanged."""
from __future__ import annotations

import math

import pytest

from training.schema import (
    MAX_CONTENT_BYTES,
    MAX_FIELD_CHARS,
    MAX_POST_TEXT_CHARS,
    Comment,
    ContentTooLarge,
    ValidationError,
    parse_label,
    parse_timestamp,
)

FULL = {
    "content": "Great post, thanks!",
    "author": "Ada",
    "author_email": "ada@example.org",
    "author_url": "https://ada.example.org/",
    "user_ip": "2001:db8::1",
    "user_agent": "Mozilla/5.0",
    "referrer": "https://search.example/?q=x",
    "permalink": "https://blog.example/post/1",
    "comment_type": "reply",
    "site": "blog-1",
    "language": "en",
    "created_at": "2024-05-01T12:00:00+00:00",
    "post_title": "Hello",
    "post_text": "The post body.",
    "honeypot": False,
    "time_to_submit": 12.5,
    "user_role": "subscriber",
}


def refused(data, field):
    with pytest.raises(ValidationError) as info:
        Comment.from_dict(data)
    assert info.value.field == field, info.value
    assert info.value.to_dict() == {"field": field, "message": info.value.message}
    assert str(info.value).startswith(field + ": ")
    return info.value


def test_minimal_comment_has_defaults():
    c = Comment.from_dict({"content": "hi"})
    assert c.content == "hi"
    assert c.comment_type == "comment"
    assert c.honeypot is None and c.time_to_submit is None
    assert c.to_dict() == {"content": "hi"}


def test_full_comment_round_trips():
    c = Comment.from_dict(FULL)
    assert c.to_dict() == FULL
    assert Comment.from_dict(c.to_dict()) == c


def test_round_trip_keeps_false_and_zero_signals():
    c = Comment.from_dict({"content": "x", "honeypot": False, "time_to_submit": 0})
    assert c.to_dict() == {"content": "x", "honeypot": False, "time_to_submit": 0.0}
    assert Comment.from_dict(c.to_dict()) == c


def test_round_trip_of_normalised_values_is_stable():
    c = Comment.from_dict({"content": "x", "user_ip": " ::FFFF:10.0.0.1 ", "created_at": "2024-05-01T14:00:00+02:00",
                           "comment_type": "PingBack", "user_role": "Administrator"})
    assert c.user_ip == "10.0.0.1"
    assert c.created_at == "2024-05-01T12:00:00+00:00"
    assert c.comment_type == "pingback"
    assert c.user_role == "administrator"
    assert Comment.from_dict(c.to_dict()) == c


def test_not_an_object():
    refused(["content"], "body")
    refused("content", "body")
    with pytest.raises(ValidationError) as info:
        Comment.from_dict(None, prefix="comments.3.")
    assert info.value.field == "comments.3"


def test_content_required():
    refused({}, "content")
    refused({"author": "x"}, "content")
    refused({"content": None}, "content")
    refused({"comment_content": None}, "comment_content")


def test_empty_content_is_accepted():
    # Trackbacks and some form posts carry no body; the model still scores the other signals.
    assert Comment.from_dict({"content": ""}).content == ""


@pytest.mark.parametrize("key", ["contnet", "text", "Content", "author_mail", "date"])
def test_unknown_fields_refused(key):
    err = refused({"content": "x", key: "y"}, key)
    assert "unknown" in err.message


def test_unknown_field_is_named_with_prefix():
    with pytest.raises(ValidationError) as info:
        Comment.from_dict({"content": "x", "bogus": 1}, prefix="comment.")
    assert info.value.field == "comment.bogus"


def test_aliases():
    c = Comment.from_dict({"comment_content": "x", "comment_author": "A", "comment_author_email": "a@b.c",
                           "comment_author_url": "http://a", "blog_lang": "fr"})
    assert (c.content, c.author, c.author_email, c.author_url, c.language) == ("x", "A", "a@b.c", "http://a", "fr")
    assert Comment.from_dict({"content": "x", "lang": "de"}).language == "de"


def test_alias_and_field_together_refused():
    err = refused({"content": "x", "comment_content": "y"}, "comment_content")
    assert "twice" in err.message


def test_errors_name_the_alias_that_was_sent():
    refused({"content": "x", "comment_author_email": "nope"}, "comment_author_email")


@pytest.mark.parametrize("field", ["content", "author", "author_email", "user_ip", "user_agent", "site", "post_text"])
def test_non_string_refused(field):
    err = refused({"content": "x", field: 42}, field)
    assert "string" in err.message


def test_null_optional_string_means_empty():
    assert Comment.from_dict({"content": "x", "author": None}).author == ""


@pytest.mark.parametrize("field", ["content", "author", "post_title"])
def test_nul_refused(field):
    refused({"content": "x", field: "a\x00b"}, field)


@pytest.mark.parametrize("field", ["content", "author", "post_text"])
def test_lone_surrogate_refused(field):
    err = refused({"content": "x", field: "bad \udcff byte"}, field)
    assert "UTF-8" in err.message


def test_content_size_limit_is_in_bytes():
    at_limit = "a" * MAX_CONTENT_BYTES
    assert len(Comment.from_dict({"content": at_limit}).content) == MAX_CONTENT_BYTES
    with pytest.raises(ContentTooLarge) as info:
        Comment.from_dict({"content": at_limit + "a"})
    assert info.value.field == "content"
    # Multi-byte characters count by their UTF-8 size, not their number.
    with pytest.raises(ContentTooLarge):
        Comment.from_dict({"content": "é" * (MAX_CONTENT_BYTES // 2 + 1)})
    assert issubclass(ContentTooLarge, ValidationError)


def test_field_size_limits():
    Comment.from_dict({"content": "x", "author": "a" * MAX_FIELD_CHARS})
    err = refused({"content": "x", "author": "a" * (MAX_FIELD_CHARS + 1)}, "author")
    assert str(MAX_FIELD_CHARS) in err.message
    Comment.from_dict({"content": "x", "post_text": "a" * MAX_POST_TEXT_CHARS})
    refused({"content": "x", "post_text": "a" * (MAX_POST_TEXT_CHARS + 1)}, "post_text")
    refused({"content": "x", "comment_type": "t" * 65}, "comment_type")


@pytest.mark.parametrize("ip,expected", [
    ("127.0.0.1", "127.0.0.1"),
    ("  10.1.2.3 ", "10.1.2.3"),
    ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("::1", "::1"),
    ("", ""),
])
def test_ip_accepted_and_normalised(ip, expected):
    assert Comment.from_dict({"content": "x", "user_ip": ip}).user_ip == expected


@pytest.mark.parametrize("ip", ["999.1.1.1", "1.2.3", "localhost", "1.2.3.4/24", "2001:db8::g", "1.2.3.4:80"])
def test_bad_ip_refused(ip):
    err = refused({"content": "x", "user_ip": ip}, "user_ip")
    assert "address" in err.message


@pytest.mark.parametrize("email", ["a@b.c", "first.last+tag@sub.example.co.uk", " spaced@example.org "])
def test_email_accepted(email):
    assert Comment.from_dict({"content": "x", "author_email": email}).author_email == email.strip()


@pytest.mark.parametrize("email", ["nope", "@example.org", "user@", "a b@example.org", "a@exa mple.org"])
def test_bad_email_refused(email):
    refused({"content": "x", "author_email": email}, "author_email")


@pytest.mark.parametrize("value,expected", [
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
    ("2024-05-01T12:00:00z", "2024-05-01T12:00:00+00:00"),
    ("2024-05-01T14:30:00+02:30", "2024-05-01T12:00:00+00:00"),
    ("2024-05-01 12:00:00", "2024-05-01T12:00:00"),
    ("2013-11-07T06:20:48.123456", "2013-11-07T06:20:48.123456"),
    ("2024-05-01", "2024-05-01T00:00:00"),
])
def test_timestamps(value, expected):
    assert parse_timestamp(value) == expected
    assert Comment.from_dict({"content": "x", "created_at": value}).created_at == expected


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00", "2024-05-01T25:00:00", "01/05/2024"])
def test_bad_timestamp_refused(value):
    refused({"content": "x", "created_at": value}, "created_at")
    with pytest.raises(ValidationError) as info:
        parse_timestamp(value, "date")
    assert info.value.field == "date"


def test_created_at_number_refused():
    refused({"content": "x", "created_at": 1714564800}, "created_at")


@pytest.mark.parametrize("value", [True, False, None])
def test_honeypot_accepts_booleans(value):
    assert Comment.from_dict({"content": "x", "honeypot": value}).honeypot is value


@pytest.mark.parametrize("value", ["true", 1, 0, "", [], {}])
def test_honeypot_refuses_other_types(value):
    err = refused({"content": "x", "honeypot": value}, "honeypot")
    assert "true, false or null" in err.message


@pytest.mark.parametrize("value,expected", [(0, 0.0), (3, 3.0), (2.75, 2.75), (None, None)])
def test_time_to_submit_numbers(value, expected):
    c = Comment.from_dict({"content": "x", "time_to_submit": value})
    assert c.time_to_submit == expected
    assert c.time_to_submit is None or isinstance(c.time_to_submit, float)


@pytest.mark.parametrize("value", ["3", True, False, [1], {"s": 1}])
def test_time_to_submit_refuses_non_numbers(value):
    err = refused({"content": "x", "time_to_submit": value}, "time_to_submit")
    assert "number" in err.message


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, 10**10])
def test_time_to_submit_refuses_out_of_range(value):
    refused({"content": "x", "time_to_submit": value}, "time_to_submit")


@pytest.mark.parametrize("value,expected", [("spam", "spam"), ("HAM", "ham"), (" Spam ", "spam")])
def test_parse_label(value, expected):
    assert parse_label(value) == expected


@pytest.mark.parametrize("value", ["", "spammy", 1, None, True])
def test_parse_label_refuses(value):
    with pytest.raises(ValidationError) as info:
        parse_label(value, "labels.0")
    assert info.value.field == "labels.0"


def test_comment_is_immutable_and_replace_works():
    c = Comment.from_dict({"content": "x"})
    with pytest.raises(AttributeError):
        c.content = "y"  # type: ignore[misc]
    assert c.replace(author="B").author == "B"
    assert c.author == ""
