"""comment_date_gmt is optional on the Akismet face: a date Winnow cannot store is ignored, never a 500."""
import pytest

from service.akismet import _date


@pytest.mark.parametrize("raw, expected", [
    ("2024-05-01 10:00:00", "2024-05-01T10:00:00+00:00"),  # MySQL style: GMT by the parameter's name
    ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00+00:00"),
    ("1714557600", "2024-05-01T10:00:00+00:00"),
    ("9999-12-31T23:59:59-23:59", ""),
    ("0001-01-01T00:00:00+05:00", ""),
    ("not a date", ""),
    ("", ""),
])
def test_dates_are_normalised_or_ignored(raw, expected):
    assert _date(raw) == expected
