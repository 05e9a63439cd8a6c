"""Importers: every format to one record form, every unusable row reported with its file and line."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from tests.conftest import require_datasets
from training import importers as im
from training.importers import FormatError, Record, dedupe, read
from training.schema import Comment

DATA = Path(__file__).parent / "data"


def lines_of(result):
    return {e.line: e.message for e in result.errors}


def only(result, **where):
    found = [r for r in result.records if all(getattr(r, k) == v for k, v in where.items())]
    assert len(found) == 1, found
    return found[0]


# --- format detection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,fmt", [
    ("wordpress.xml", "wxr"), ("broken-wordpress.xml", "wxr"), ("disqus.xml", "disqus"), ("mixed.jsonl", "jsonl"),
    ("simple.csv", "csv"), ("mapped.csv", "csv"), ("Youtube09-Test.csv", "youtube"), ("sms.txt", "sms"),
    ("atom.xml", None), ("notes.txt", None),
])
def test_detect(name, fmt):
    assert im.detect(DATA / name) == fmt


def test_detect_by_content_without_extension(tmp_path):
    sms = tmp_path / "SMSSpamCollection"
    sms.write_text("ham\thello\nspam\tWIN now\n")
    assert im.detect(sms) == "sms"
    jsonl = tmp_path / "export"
    jsonl.write_text('{"text": "x", "label": "ham"}\n')
    assert im.detect(jsonl) == "jsonl"
    xml = tmp_path / "export.dat"
    xml.write_text((DATA / "disqus.xml").read_text())
    assert im.detect(xml) == "disqus"


def test_undetectable_file_is_an_error_not_a_crash():
    result = read(DATA / "notes.txt")
    assert result.records == []
    assert result.errors[0].line == 0 and "format" in result.errors[0].message


def test_format_can_be_forced(tmp_path):
    path = tmp_path / "messages.dat"
    path.write_text("spam\tfree money\nham\tsee you at 5\n")
    assert im.detect(path) == "sms"
    result = read(path, "sms")
    assert [r.label for r in result.records] == ["spam", "ham"]
    # Forcing the wrong format reports rows instead of guessing.
    wrong = read(path, "jsonl")
    assert wrong.records == [] and len(wrong.errors) == 2


def test_unknown_format_and_bad_mapping_raise():
    with pytest.raises(FormatError):
        read(DATA / "simple.csv", "excel")
    with pytest.raises(FormatError):
        read(DATA / "simple.csv", mapping={"colour": "x"})
    with pytest.raises(FormatError):
        read(DATA / "sms.txt", "sms", mapping={"content": "x"})


# --- JSONL ---------------------------------------------------------------------------------------------------


def test_jsonl_good_rows():
    result = read(DATA / "mixed.jsonl")
    first = only(result, id="a-1")
    assert first.comment == Comment(content="Nice video", author="Ann")
    assert (first.label, first.source, first.line) == ("ham", "test:one", 1)
    assert only(result, id="a-2").label == "spam"
    winnow_style = only(result, id="a-9")
    assert winnow_style.label == "spam" and winnow_style.source == "mixed"
    assert winnow_style.comment.user_ip == "10.0.0.1" and winnow_style.comment.author_email == "x@y.z"


def test_jsonl_never_reads_date():
    # The YouTube `date` leaks the label; extra keys such as video_id are ignored too.
    record = only(read(DATA / "mixed.jsonl"), id="a-1")
    assert record.comment.created_at == ""


def test_jsonl_bad_rows_reported_with_line():
    result = read(DATA / "mixed.jsonl")
    errors = lines_of(result)
    assert "not valid JSON" in errors[4]
    assert errors[5] == "not a JSON object"
    assert errors[6] == "text: is missing"
    assert errors[7].startswith("label: missing is not a known label")
    assert errors[8].startswith('label: "spma" is not a known label')
    assert errors[9] == "text: must be a string"
    assert all(e.file == str(DATA / "mixed.jsonl") for e in result.errors)
    assert result.skipped == collections.Counter({"blank line": 1})
    # Every physical line is accounted for: a record, an error or a counted skip.
    physical = len((DATA / "mixed.jsonl").read_text().splitlines())
    assert len(result.records) + len(result.errors) + sum(result.skipped.values()) == physical


def test_jsonl_a_member_given_twice_or_nan_is_a_row_error(tmp_path):
    """Parsers keep the last of two members silently ({"label": "spam", "label": "ham"} was imported as ham)."""
    path = tmp_path / "twice.jsonl"
    path.write_text('{"text": "x", "label": "spam", "label": "ham"}\n{"text": "y", "label": "ham", "id": NaN}\n'
                    '{"text": "z", "label": "ham"}\n' + '{"a": ' * 5000 + '1' + '}' * 5000 + '\n')
    result = read(path)
    assert [r.comment.content for r in result.records] == ["z"]
    assert lines_of(result) == {1: "label: given twice in one object", 2: "line: NaN is not a number in JSON",
                                4: "not valid JSON (nests too deeply)"}


def test_jsonl_bad_optional_field_keeps_the_row_with_a_warning():
    result = read(DATA / "mixed.jsonl")
    kept = only(result, id="a-10")
    assert kept.comment.user_ip == ""
    assert [(w.line, w.message) for w in result.warnings] == [
        (11, "user_ip: is not an IPv4 or IPv6 address (field left out)")]


def test_jsonl_mapping_and_label_values(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text('{"body": "hello", "is_spam": "no", "who": "Ann"}\n{"body": "buy", "is_spam": "yes"}\n')
    result = read(path, mapping={"content": "body", "label": "is_spam", "author": "who"},
                  labels=im.parse_labels("spam=yes,ham=no"))
    assert [(r.comment.content, r.comment.author, r.label) for r in result.records] == [
        ("hello", "Ann", "ham"), ("buy", "", "spam")]
    assert result.errors == []


def test_jsonl_too_large_content_is_a_row_error(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"text": "a" * 70000, "label": "spam"}) + "\n"
                    + json.dumps({"text": "small", "label": "ham"}) + "\n")
    result = read(path)
    assert len(result.records) == 1
    assert result.errors[0].line == 1 and "larger than" in result.errors[0].message


def test_jsonl_invalid_utf8_is_a_row_error(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"text": "caf\xe9", "label": "ham"}\n{"text": "fine", "label": "ham"}\n')
    result = read(path)
    assert [r.comment.content for r in result.records] == ["fine"]
    assert result.errors[0].line == 1 and "UTF-8" in result.errors[0].message


@pytest.mark.parametrize("name", ["empty.jsonl", "blank.jsonl"])
def test_empty_file(name):
    result = read(DATA / name)
    assert result.records == []
    assert [(e.line, e.message) for e in result.errors] == [(0, "file is empty")]


def test_file_with_nothing_usable_has_errors():
    result = read(DATA / "nothing-usable.jsonl")
    assert result.records == [] and result.errors


def test_file_with_only_skipped_rows_says_so(tmp_path):
    path = tmp_path / "pending.xml"
    path.write_text('<?xml version="1.0"?><rss xmlns:wp="http://wordpress.org/export/1.2/"><channel><item>'
                    "<wp:comment><wp:comment_content>x</wp:comment_content><wp:comment_approved>0"
                    "</wp:comment_approved></wp:comment></item></channel></rss>")
    result = read(path)
    assert result.records == []
    assert result.errors[0].line == 0 and "no usable records" in result.errors[0].message
    assert "pending moderation" in result.errors[0].message


def test_missing_file():
    result = read(DATA / "does-not-exist.jsonl")
    assert result.records == [] and "cannot read" in result.errors[0].message


# --- CSV -----------------------------------------------------------------------------------------------------


def test_csv_columns_found_by_name():
    result = read(DATA / "simple.csv")
    assert [(r.id, r.label, r.comment.content) for r in result.records] == [
        ("c1", "ham", "Nice article"), ("c2", "spam", "Buy followers cheap"), ("c4", "ham", "Good point"),
        ("c5", "spam", "Cheap loans today")]
    assert only(result, id="c1").comment.author_email == "a@example.org"
    assert lines_of(result) == {4: "content: is empty"}
    assert [w.line for w in result.warnings] == [5]
    assert result.skipped["blank line"] == 1


def test_csv_with_mapping_and_labels():
    result = read(DATA / "mapped.csv", mapping=im.parse_mapping("content=body,label=verdict,author=who,author_email=mail"),
                  labels=im.parse_labels("spam=yes,ham=no"))
    assert [(r.line, r.label, r.comment.author) for r in result.records] == [(2, "ham", "Ann"), (3, "spam", "Bot"),
                                                                             (5, "ham", "Ben")]
    # Quoted commas, doubled quotes and a newline inside a quoted field are one record, numbered where it starts.
    assert result.records[0].comment.content == 'Hello, I liked the part about "soil".'
    assert result.records[1].comment.content == "WIN A FREE IPHONE\nvisit http://win.example now"
    errors = lines_of(result)
    assert errors[6].startswith('verdict: "perhaps" is not a known label (expected no/yes)')
    assert errors[7] == "has 1 fields where the header has 4"


def test_csv_without_a_label_mapping_refuses_unknown_values():
    result = read(DATA / "mapped.csv", mapping={"content": "body", "label": "verdict"})
    assert result.records == []
    assert all("is not a known label" in e.message for e in result.errors[:4])


def test_csv_missing_mapped_column():
    result = read(DATA / "missing-column.csv", mapping={"content": "BODY", "label": "label"})
    assert result.records == []
    assert [(e.line, e.message) for e in result.errors] == [
        (1, "no column 'BODY' (for content); the columns are: text, label")]


def test_csv_without_recognisable_columns(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("a,b\n1,2\n")
    result = read(path)
    assert result.records == []
    assert result.errors[0].line == 1 and result.errors[0].message.startswith("no content column")


def test_csv_semicolon_delimiter():
    result = read(DATA / "semicolon.csv")
    assert [(r.label, r.comment.content) for r in result.records] == [("ham", "Bonjour, merci"),
                                                                       ("spam", "Gagnez un iPhone")]


def test_csv_unterminated_quote_is_reported(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('text,label\n"fine",ham\n"never closed,spam\n')
    result = read(path)
    assert [r.comment.content for r in result.records] == ["fine"]
    assert result.errors and result.errors[0].line == 3


def test_a_stray_quote_is_an_error_where_it_opened_not_rows_merged_into_one(tmp_path):
    """A quote opening a field and closing lines later, mid-field, used to make those lines one comment."""
    path = tmp_path / "stray.csv"
    path.write_text('content,label\nfirst,ham\n"stray quote here,spam\nsecond,ham\nhe said "hi" to me,ham\n'
                    'third,spam\n')
    result = read(path)
    assert [r.comment.content for r in result.records] == ["first"]
    assert [e.line for e in result.errors] == [3]
    assert result.errors[0].message.startswith("malformed CSV") and "rest of the file was not read" in \
        result.errors[0].message
    # A quote inside an unquoted field is text, as CSV has it.
    path.write_text('content,label\nhe said "hi" to me,ham\n')
    assert [r.comment.content for r in read(path).records] == ['he said "hi" to me']


def test_csv_stops_at_a_record_it_cannot_read_rather_than_import_fragments(tmp_path, monkeypatch):
    path = tmp_path / "long.csv"
    path.write_text('content,label\n"' + "x" * 140_000 + '\nwin money now,ham\n",spam\nthanks for the fix,ham\n')
    result = read(path)  # a 140 kB field is read whole, then refused for its size
    assert [r.comment.content for r in result.records] == ["thanks for the fix"]
    assert [(e.line, e.message.split(":")[0]) for e in result.errors] == [(2, "content")]

    monkeypatch.setattr(im, "CSV_FIELD_LIMIT", 1000)
    import csv
    limit = csv.field_size_limit(1000)
    try:
        path.write_text('content,label\nfine,ham\n"' + "x" * 2000 + '\nwin money now,ham\n",spam\nlater,ham\n')
        result = read(path)
    finally:
        csv.field_size_limit(limit)
    assert [r.comment.content for r in result.records] == ["fine"]  # never "win money now", a fragment
    assert len(result.errors) == 1 and result.errors[0].line == 3
    assert result.errors[0].message.endswith("the rest of the file was not read")


def test_a_row_whose_source_or_id_is_no_text_is_an_error_of_its_own(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "fine", "label": "ham", "source": "\\ud800"}\n'
                    '{"text": "also fine", "label": "spam", "id": "\\udfff"}\n{"text": "kept", "label": "ham"}\n')
    result = read(path)
    assert [r.comment.content for r in result.records] == ["kept"]
    assert [(e.line, e.message) for e in result.errors] == [(1, "source: is not valid UTF-8 text"),
                                                            (2, "id: is not valid UTF-8 text")]


def test_parse_mapping_and_labels_errors():
    assert im.parse_mapping("content=CONTENT, label=CLASS,comment_author=AUTHOR") == {
        "content": "CONTENT", "label": "CLASS", "author": "AUTHOR"}
    for bad in ("content", "content=", "=X", "colour=X"):
        with pytest.raises(FormatError):
            im.parse_mapping(bad)
    assert im.parse_labels("spam=1,spam=yes,ham=0") == {"1": "spam", "yes": "spam", "0": "ham"}
    for bad in ("spam=1", "maybe=2,ham=0", "spam=,ham=0", "spam1,ham=0"):
        with pytest.raises(FormatError):
            im.parse_labels(bad)


# --- SMS and YouTube -----------------------------------------------------------------------------------------


def test_sms_format():
    result = read(DATA / "sms.txt")
    assert [(r.line, r.label) for r in result.records] == [(1, "ham"), (2, "spam"), (3, "ham"), (4, "ham"),
                                                           (6, "spam")]
    # No CSV quoting: a bare quote does not swallow the next line.
    assert result.records[2].comment.content == 'He said "yes'
    # Split at the first tab only.
    assert result.records[4].comment.content == "Two\ttabs here: the second is text"
    errors = lines_of(result)
    assert errors[7].startswith('label: "hma" is not a known label')
    assert errors[8] == "no tab between label and text"
    assert errors[9] == "content: is empty"
    assert result.skipped["blank line"] == 1


def test_youtube_csv():
    result = read(DATA / "Youtube09-Test.csv")
    assert [(r.id, r.source, r.label, r.line) for r in result.records] == [
        ("youtube-test-0001", "youtube:Test", "ham", 2), ("youtube-test-0002", "youtube:Test", "spam", 3),
        ("youtube-test-0003", "youtube:Test", "spam", 4)]
    assert result.records[0].comment == Comment(content="Love this song\ufeff", author="Alice")
    assert result.records[2].comment.content == 'He said "subscribe" and\nthen left\ufeff'
    # DATE is never read: it leaks the label in the real Eminem file.
    assert all(r.comment.created_at == "" for r in result.records)
    errors = lines_of(result)
    assert errors[6].startswith('CLASS: "2" is not a known label')
    assert errors[7] == "has 6 fields where the header has 5"


# --- WordPress WXR -------------------------------------------------------------------------------------------


def test_wxr_labels_and_skips():
    result = read(DATA / "wordpress.xml")
    assert [(r.id, r.label) for r in result.records] == [("101", "ham"), ("102", "spam"), ("201", "spam"),
                                                         ("202", "ham")]
    assert result.skipped == collections.Counter({
        "wordpress comment_approved=0 (pending moderation)": 1,
        "wordpress comment_approved=trash (in the trash)": 1,
        "wordpress comment_approved=post-trashed (on a trashed post)": 1})
    assert lines_of(result) == {98: "wp:comment_content: is empty"}


def test_wxr_fields():
    result = read(DATA / "wordpress.xml")
    ham = only(result, id="101")
    assert ham.line == 20 and ham.source == "wordpress"
    c = ham.comment
    assert (c.author, c.author_email, c.author_url, c.user_ip) == ("Marta", "marta@example.org",
                                                                   "https://marta.example", "203.0.113.7")
    assert c.created_at == "2024-05-02T08:11:12+00:00"
    assert (c.post_title, c.permalink) == ("Growing tomatoes on a balcony", "https://blog.example/2024/05/tomatoes/")
    assert c.post_text == "<p>Six pots, one summer, far too many tomatoes.</p>"
    assert c.comment_type == "comment"
    spam = only(result, id="102").comment
    assert spam.content == 'Great post! <a href="http://pills.example/buy">buy cheap pills</a> &amp; more'
    assert spam.comment_type == "comment"  # an empty wp:comment_type is a plain comment
    assert only(result, id="202").comment.comment_type == "pingback"


def test_wxr_bad_metadata_kept_with_warnings():
    result = read(DATA / "wordpress.xml")
    seo = only(result, id="201").comment
    assert (seo.author_email, seo.user_ip, seo.created_at) == ("", "", "")  # zero GMT date means unknown
    assert sorted(w.message for w in result.warnings) == [
        "wp:comment_author_IP: is not an IPv4 or IPv6 address (field left out)",
        "wp:comment_author_email: is not an email address (field left out)"]
    assert {w.line for w in result.warnings} == {76}


def test_wxr_malformed_keeps_what_came_before_and_reports_the_line():
    result = read(DATA / "broken-wordpress.xml")
    assert [r.comment.content for r in result.records] == ["first is fine"]
    assert len(result.errors) == 1
    assert result.errors[0].line == 8 and result.errors[0].message.startswith("malformed XML")


@pytest.mark.parametrize("name", ["entities.xml", "external.xml"])
def test_xml_entities_and_dtds_refused(name):
    result = read(DATA / name)
    assert result.records == []
    assert len(result.errors) == 1 and "refused XML" in result.errors[0].message


def test_xml_not_an_export_when_forced(tmp_path):
    result = read(DATA / "atom.xml", "wxr")
    assert result.records == [] and "no usable records" in result.errors[0].message


def test_truncated_xml(tmp_path):
    path = tmp_path / "cut.xml"
    path.write_text((DATA / "wordpress.xml").read_text()[:3000])
    result = read(path)
    assert result.records == []
    assert "malformed XML" in result.errors[0].message and result.errors[0].line > 1


# --- Disqus --------------------------------------------------------------------------------------------------


def test_disqus():
    result = read(DATA / "disqus.xml")
    assert [(r.id, r.label, r.line) for r in result.records] == [("9001", "ham", 24), ("9002", "spam", 39),
                                                                 ("9004", "spam", 63)]
    ham = result.records[0].comment
    assert ham.content == "<p>Lovely photos, what soil do you use?</p>"
    assert (ham.author, ham.author_email, ham.user_ip) == ("Reader", "reader@example.org", "203.0.113.9")
    assert ham.created_at == "2024-05-02T08:11:12+00:00"
    assert (ham.permalink, ham.post_title) == ("https://blog.example/2024/05/tomatoes/",
                                               "Growing tomatoes on a balcony")
    assert result.skipped == collections.Counter({"disqus isDeleted=true, isSpam=false": 1})
    assert lines_of(result) == {73: "isSpam: 'maybe' is not true or false"}
    assert [(w.line, w.message) for w in result.warnings] == [
        (63, "ipAddress: is not an IPv4 or IPv6 address (field left out)")]


# --- progress and several files ------------------------------------------------------------------------------


def test_progress_counts_every_byte():
    seen = []
    result = read(DATA / "wordpress.xml", progress=seen.append)
    assert sum(seen) == (DATA / "wordpress.xml").stat().st_size
    assert len(result.records) == 4


def test_read_all_and_source_override():
    result = im.read_all([DATA / "simple.csv", DATA / "sms.txt"], source="mine")
    assert len(result.records) == 9
    assert {r.source for r in result.records} == {"mine"}
    assert {e.file for e in result.errors} == {str(DATA / "simple.csv"), str(DATA / "sms.txt")}


# --- duplicates ----------------------------------------------------------------------------------------------


def rec(text, label, n):
    return Record(Comment(content=text), label, "t", f"r{n}", n)


def test_dedupe_keeps_first_copy_and_reports():
    records = [rec("hello  world", "ham", 1), rec("other", "spam", 2), rec(" hello world ", "ham", 3),
               rec("hello world", "ham", 4)]
    kept, report = dedupe(records)
    assert [r.id for r in kept] == ["r1", "r2"]
    assert (report.total, report.kept, report.removed, report.exact_copies) == (4, 2, 2, 0)
    assert len(report.groups) == 1 and report.groups[0].where == ["t:r1", "t:r3", "t:r4"]
    assert report.conflicts == []


def test_dedupe_counts_exact_copies_apart_from_whitespace_variants():
    kept, report = dedupe([rec("a b", "ham", 1), rec("a b", "ham", 2), rec("a  b", "ham", 3)])
    assert len(kept) == 1 and report.removed == 2 and report.exact_copies == 1


def test_dedupe_conflict_majority_wins():
    records = [rec("nice song", "ham", 1), rec("nice song", "spam", 2), rec("nice song", "spam", 3),
               rec("unique", "ham", 4)]
    kept, report = dedupe(records)
    assert [(r.id, r.label) for r in kept] == [("r2", "spam"), ("r4", "ham")]
    (conflict,) = report.conflicts
    assert conflict.kept == "spam" and conflict.labels == collections.Counter(spam=2, ham=1)
    assert report.dropped_for_conflict == 1
    assert report.to_dict()["conflicts"] == 1


def test_dedupe_conflict_tie_drops_every_copy():
    kept, report = dedupe([rec("x", "ham", 1), rec("x", "spam", 2), rec("y", "ham", 3)])
    assert [r.id for r in kept] == ["r3"]
    assert report.conflicts[0].kept is None
    assert report.dropped_for_conflict == 2 and report.removed == 2


# --- the shared corpora --------------------------------------------------------------------------------------


def test_shared_youtube_jsonl_counts():
    datasets = require_datasets()
    result = read(datasets / "youtube" / "youtube.jsonl")
    assert result.errors == [] and result.warnings == []
    assert len(result.records) == 1586
    assert result.counts() == collections.Counter(spam=831, ham=755)
    assert collections.Counter(r.source for r in result.records) == collections.Counter({
        "youtube:Psy": 350, "youtube:KatyPerry": 350, "youtube:LMFAO": 438, "youtube:Eminem": 448})
    assert all(r.comment.created_at == "" for r in result.records)
    kept, report = dedupe(result.records)
    assert report.exact_copies == 146 and report.conflicts == []
    assert len(kept) == 1440


def test_shared_youtube_csvs_match_the_jsonl():
    datasets = require_datasets()
    jsonl = {r.id: r for r in read(datasets / "youtube" / "youtube.jsonl").records}
    expected = {"Psy": (175, 175), "KatyPerry": (175, 175), "LMFAO": (236, 202), "Eminem": (245, 203)}
    total = 0
    for path in sorted((datasets / "youtube" / "raw").glob("Youtube0*.csv")):
        result = read(path)
        assert result.errors == [], result.errors[:3]
        video = path.stem.split("-", 1)[1]
        counts = result.counts()
        assert (counts["spam"], counts["ham"]) == expected[video]
        for r in result.records:
            assert (r.comment, r.label, r.source) == (jsonl[r.id].comment, jsonl[r.id].label, jsonl[r.id].source)
        total += len(result.records)
    assert total == 1586


def test_shared_eminem_multiline_record():
    datasets = require_datasets()
    result = read(datasets / "youtube" / "raw" / "Youtube04-Eminem.csv")
    assert len(result.records) == 448
    folded = [r for r in result.records if r.comment.content.count("\n") >= 5]
    assert len(folded) == 1 and folded[0].label == "spam"


def test_shared_sms_counts_and_duplicates():
    datasets = require_datasets()
    raw = read(datasets / "sms-spam" / "raw" / "SMSSpamCollection")
    jsonl = read(datasets / "sms-spam" / "sms-spam.jsonl")
    for result in (raw, jsonl):
        assert result.errors == []
        assert len(result.records) == 5574
        assert result.counts() == collections.Counter(ham=4827, spam=747)
    assert [r.comment for r in raw.records] == [r.comment for r in jsonl.records]
    kept, report = dedupe(raw.records)
    # The README's 403 are byte-identical copies (5,171 distinct texts); 11 more differ only by trailing space.
    assert report.exact_copies == 403
    assert len({r.comment.content for r in raw.records}) == 5171
    assert report.removed == 414 and len(kept) == 5160
    assert report.conflicts == []
