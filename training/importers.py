"""Training data files to one record form: a validated Comment, its label, where it came from.

Every row that cannot be used is reported with its file and line, or counted under a reason when the format says
to skip it; nothing is dropped silently. Fields that leak the label in the shared corpora (the YouTube `date`) are
never read into a Comment. XML is parsed with entity expansion and external references refused.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import io
import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from xml.sax import SAXException
from xml.sax.handler import ContentHandler, feature_namespaces

import defusedxml.sax
from defusedxml import DefusedXmlException

from .schema import ALIASES, MAX_POST_TEXT_CHARS, Comment, ValidationError, is_text, unique_members

FORMATS = ("jsonl", "csv", "sms", "youtube", "wxr", "disqus")

COMMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Comment))
# What a mapping may name besides Comment fields.
MAPPING_TARGETS = COMMENT_FIELDS + ("label", "id", "source")

# Label values understood without --labels: the names themselves and the 1/0 convention of the UCI corpora.
DEFAULT_LABELS = {"spam": "spam", "ham": "ham", "1": "spam", "0": "ham"}

# Columns a CSV without a mapping is searched for (case-insensitive), in order of preference.
CSV_GUESSES = {
    "content": ("content", "text", "comment", "comment_content", "message", "body"),
    "label": ("label", "class", "is_spam", "spam", "category"),
    "id": ("id", "comment_id"),
}

YOUTUBE_COLUMNS = ["COMMENT_ID", "AUTHOR", "DATE", "CONTENT", "CLASS"]
WXR_NAMESPACE = "http://wordpress.org/export/"
RSS_CONTENT_NAMESPACE = "http://purl.org/rss/1.0/modules/content/"
SNIFF_BYTES = 64 * 1024


class FormatError(ValueError):
    """The caller asked for something impossible (unknown format, bad mapping); not a problem in a row."""


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    comment: Comment
    label: str  # "spam" or "ham"
    source: str  # e.g. "youtube:Psy", or the file's stem
    id: str | None
    line: int  # where the record starts in its file (1-based)


@dataclasses.dataclass(frozen=True, slots=True)
class RowError:
    file: str
    line: int  # 0 for a problem with the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclasses.dataclass
class ImportResult:
    records: list[Record] = dataclasses.field(default_factory=list)
    errors: list[RowError] = dataclasses.field(default_factory=list)  # rows (or files) that could not be used
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # reason -> rows
    # Rows kept without an optional field that failed validation (a bogus author email should not cost a label).
    warnings: list[RowError] = dataclasses.field(default_factory=list)

    def extend(self, other: "ImportResult") -> None:
        self.records.extend(other.records)
        self.errors.extend(other.errors)
        self.skipped.update(other.skipped)
        self.warnings.extend(other.warnings)

    def counts(self) -> collections.Counter:
        return collections.Counter(r.label for r in self.records)


# --- public entry points -------------------------------------------------------------------------------------


def read(path: str | Path, fmt: str | None = None, mapping: Mapping[str, str] | None = None,
         labels: Mapping[str, str] | None = None, source: str | None = None,
         progress: Callable[[int], None] | None = None) -> ImportResult:
    """Read one file into records, with every unusable row reported.

    `fmt` is one of FORMATS (detected when None). `mapping` maps Comment fields, `label`, `id` and `source` to the
    file's column (CSV) or key (JSONL) names. `labels` maps the file's label values to "spam"/"ham" (default: the
    names themselves and 1/0). `source` overrides the per-record source. `progress` is called with byte counts as
    the file is read.
    """
    path = Path(path)
    name = str(path)
    if fmt is not None and fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    mapping = dict(mapping or {})
    for target in mapping:
        if target not in MAPPING_TARGETS:
            raise FormatError(f"cannot map {target!r}: not a comment field, label, id or source")
    result = ImportResult()
    try:
        size = path.stat().st_size
        head = _head(path)
    except OSError as exc:
        result.errors.append(RowError(name, 0, f"cannot read: {exc.strerror or exc}"))
        return result
    if size == 0 or not head.strip():
        result.errors.append(RowError(name, 0, "file is empty"))
        return result
    if fmt is None:
        fmt = detect(path, head)
        if fmt is None:
            result.errors.append(RowError(name, 0, "cannot tell the format from the name or content; pass a format"
                                          f" ({', '.join(FORMATS)})"))
            return result
    if mapping and fmt not in ("csv", "jsonl"):
        raise FormatError(f"a column mapping applies to csv and jsonl files, not {fmt}")
    rows = _Rows(name, result, labels, source)
    with open(path, "rb") as raw:
        stream = io.BufferedReader(_Counting(raw, progress)) if progress else raw
        _READERS[fmt](stream, path, rows, mapping)
    if not result.records and not result.errors:
        reasons = ", ".join(f"{n} {why}" for why, n in result.skipped.most_common())
        result.errors.append(RowError(name, 0, "no usable records" + (f" (skipped: {reasons})" if reasons else "")))
    return result


def read_all(paths: Iterable[str | Path], **options: Any) -> ImportResult:
    result = ImportResult()
    for path in paths:
        result.extend(read(path, **options))
    return result


def detect(path: Path, head: bytes | None = None) -> str | None:
    """The format of `path` from its extension and first bytes, or None when it cannot be told."""
    head = _head(path) if head is None else head
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    ext = path.suffix.lower()
    first = next((line for line in text.splitlines() if line.strip()), "")
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if ext in (".xml", ".wxr") or first.lstrip().startswith("<"):
        if WXR_NAMESPACE in text:
            return "wxr"
        if re.search(r"<disqus[\s>]", text):
            return "disqus"
        return None
    if ext in (".csv", ".tsv"):
        header = next(csv.reader([first], delimiter=_delimiter(first, ext)), [])
        return "youtube" if header == YOUTUBE_COLUMNS else "csv"
    if first.lstrip().startswith("{"):
        return "jsonl"
    if re.match(r"(?i)(ham|spam)\t", first):
        return "sms"
    return None


def parse_mapping(text: str) -> dict[str, str]:
    """`content=CONTENT,label=CLASS` -> {"content": "CONTENT", "label": "CLASS"}."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        target, eq, column = part.partition("=")
        target, column = target.strip(), column.strip()
        if not eq or not target or not column:
            raise FormatError(f"bad mapping {part!r}: expected FIELD=COLUMN")
        target = ALIASES.get(target, target)
        if target not in MAPPING_TARGETS:
            raise FormatError(f"cannot map {target!r}: not a comment field, label, id or source")
        mapping[target] = column
    return mapping


def parse_labels(text: str) -> dict[str, str]:
    """`spam=1,ham=0,spam=yes` -> {"1": "spam", "0": "ham", "yes": "spam"} (value in the file -> label)."""
    values: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        label, eq, value = part.partition("=")
        label = label.strip().lower()
        if not eq or label not in ("spam", "ham") or not value.strip():
            raise FormatError(f"bad label mapping {part!r}: expected spam=VALUE or ham=VALUE")
        values[value.strip()] = label
    if set(values.values()) != {"spam", "ham"}:
        raise FormatError("a label mapping needs at least one value for spam and one for ham")
    return values


# --- duplicates ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DuplicateGroup:
    text: str  # the normalised text
    labels: collections.Counter  # label -> copies
    kept: str | None  # the label kept, None when a tie dropped every copy
    where: list[str]  # source:id (or source:line) of every copy

    @property
    def copies(self) -> int:
        return sum(self.labels.values())

    @property
    def conflicting(self) -> bool:
        return len(self.labels) > 1


@dataclasses.dataclass
class DedupeReport:
    total: int = 0
    kept: int = 0
    exact_copies: int = 0  # extra copies identical byte for byte
    groups: list[DuplicateGroup] = dataclasses.field(default_factory=list)

    @property
    def removed(self) -> int:
        return self.total - self.kept

    @property
    def conflicts(self) -> list[DuplicateGroup]:
        return [g for g in self.groups if g.conflicting]

    @property
    def dropped_for_conflict(self) -> int:
        """Records removed because their label lost the vote (all copies when the vote tied)."""
        return sum(g.copies - (g.labels[g.kept] if g.kept else 0) for g in self.conflicts)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "removed": self.removed, "exact_copies": self.exact_copies,
                "duplicate_groups": len(self.groups), "conflicts": len(self.conflicts),
                "dropped_for_conflict": self.dropped_for_conflict}


def normalise_text(text: str) -> str:
    """The duplicate key: runs of whitespace collapsed, ends trimmed (a trailing space is not a new message)."""
    return " ".join(text.split())


def dedupe(records: Iterable[Record]) -> tuple[list[Record], DedupeReport]:
    """Keep one record per normalised text; report every duplicate group and every label conflict.

    Copies that agree keep the first occurrence. Copies that disagree are settled by strict majority (the first
    record carrying the winning label is kept): a minority label on a repeated text is far more often a labelling
    slip than a real difference. A tie has no winner, so every copy is dropped rather than guessed at.
    """
    records = list(records)
    by_key: dict[str, list[Record]] = {}
    for record in records:
        by_key.setdefault(normalise_text(record.comment.content), []).append(record)
    report = DedupeReport(total=len(records))
    keep: set[int] = set()
    for key, group in by_key.items():
        if len(group) == 1:
            keep.add(id(group[0]))
            continue
        report.exact_copies += len(group) - len({r.comment.content for r in group})
        votes = collections.Counter(r.label for r in group)
        (top, top_n), *rest = votes.most_common()
        winner = None if rest and rest[0][1] == top_n else top
        if winner is not None:
            keep.add(id(next(r for r in group if r.label == winner)))
        report.groups.append(DuplicateGroup(key, votes, winner, [_where(r) for r in group]))
    kept = [r for r in records if id(r) in keep]
    report.kept = len(kept)
    return kept, report


def _where(record: Record) -> str:
    return f"{record.source}:{record.id if record.id is not None else record.line}"


# --- row handling shared by every format ---------------------------------------------------------------------


class _Rows:
    """Turns one raw row (field -> value, label value) into a Record, or an error/skip/warning in the result."""

    def __init__(self, file: str, result: ImportResult, labels: Mapping[str, str] | None, source: str | None):
        self.file = file
        self.result = result
        # File values match exactly first, then case-insensitively ("Spam", "SPAM").
        self.labels = {**{k.lower(): v for k, v in labels.items()}, **labels} if labels else None
        self.source = source

    def error(self, line: int, message: str) -> None:
        self.result.errors.append(RowError(self.file, line, message))

    def skip(self, reason: str) -> None:
        self.result.skipped[reason] += 1

    def label(self, value: Any, line: int, name: str = "label") -> str | None:
        text = "" if value is None or isinstance(value, (dict, list)) else str(value).strip()
        if self.labels is not None:
            found = self.labels.get(text) or self.labels.get(text.lower())
            expected = "/".join(sorted(self.labels))
        else:
            found = DEFAULT_LABELS.get(text.lower())
            expected = "spam/ham or 1/0"
        if found is None:
            shown = json.dumps(value, ensure_ascii=False) if value is not None else "missing"
            self.error(line, f"{name}: {shown[:80]} is not a known label (expected {expected})")
        return found

    def add(self, line: int, fields: dict[str, Any], label: str | None, *, source: str, id: Any = None,
            names: Mapping[str, str] | None = None, required: Iterable[str] = ("content",)) -> None:
        """Validate `fields` as a Comment; `names` maps Comment fields to how the file calls them, for messages."""
        names = names or {}
        if label is None:
            return
        content = fields.get("content")
        if content is None:
            self.error(line, f"{names.get('content', 'content')}: is missing")
            return
        if isinstance(content, str) and not content.strip():
            self.error(line, f"{names.get('content', 'content')}: is empty")
            return
        fields = {k: v for k, v in fields.items() if v is not None}
        while True:
            try:
                comment = Comment.from_dict(fields)
                break
            except ValidationError as exc:
                shown = names.get(exc.field, exc.field)
                if exc.field in required or exc.field not in fields:
                    self.error(line, f"{shown}: {exc.message}")
                    return
                self.result.warnings.append(RowError(self.file, line, f"{shown}: {exc.message} (field left out)"))
                del fields[exc.field]
        record_id = None if id is None or id == "" else str(id)
        for name, value in (("source", self.source or source), ("id", record_id)):
            if value is not None and not is_text(value):
                self.error(line, f"{names.get(name, name)}: is not valid UTF-8 text")
                return
        self.result.records.append(Record(comment, label, self.source or source, record_id, line))


# --- JSONL ---------------------------------------------------------------------------------------------------

def _read_jsonl(stream, path: Path, rows: _Rows, mapping: Mapping[str, str]) -> None:
    keys = {"content": "text", "label": "label", "id": "id", "source": "source"}
    keys.update(mapping)
    comment_keys = {f: mapping.get(f, f) for f in COMMENT_FIELDS if f not in ("content",)}
    comment_keys["content"] = keys["content"]
    for number, raw in enumerate(stream, 1):
        text = raw.decode("utf-8", "surrogateescape").lstrip("\ufeff") if number == 1 else \
            raw.decode("utf-8", "surrogateescape")
        if not text.strip():
            rows.skip("blank line")
            continue
        try:
            obj = json.loads(text.strip(), object_pairs_hook=unique_members, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            rows.error(number, f"not valid JSON ({exc.msg} at column {exc.pos + 1})")
            continue
        except ValidationError as exc:
            rows.error(number, f"{exc.field}: {exc.message}")
            continue
        except RecursionError:
            rows.error(number, "not valid JSON (nests too deeply)")
            continue
        if not isinstance(obj, dict):
            rows.error(number, "not a JSON object")
            continue
        if (keys["content"] not in obj and "content" not in obj and type(obj.get("comment")) is dict
                and "comment" not in mapping.values()):
            # A line of GET /api/v1/labels/export: the comment's fields are nested under `comment` (its site is
            # the import's to set), and the label's own times must not be read as the comment's created_at.
            nested = {k: v for k, v in obj["comment"].items() if k != "site"}
            obj = {k: v for k, v in obj.items() if k not in ("comment", "created_at")} | nested
        if keys["content"] not in obj and "content" in obj and "content" not in mapping:
            # An API body spells it `content`; the shared corpora spell it `text`.
            obj = dict(obj, **{keys["content"]: obj.pop("content")})
        for alias, field in ALIASES.items():
            if alias in obj and field not in mapping and comment_keys[field] not in obj:
                obj[comment_keys[field]] = obj.pop(alias)
        # Only comment fields are read. The corpora's `date` is not one, and must never become one unmapped: in the
        # YouTube corpus its mere presence tells spam from ham.
        fields = {f: obj[k] for f, k in comment_keys.items() if k in obj}
        label = rows.label(obj.get(keys["label"]), number, keys["label"])
        names = {f: k for f, k in comment_keys.items()}
        source = obj.get(keys["source"])
        rows.add(number, fields, label, source=str(source) if source else path.stem, id=obj.get(keys["id"]),
                 names=names)


def _no_constant(name: str) -> Any:
    raise ValidationError("line", f"{name} is not a number in JSON")


# --- CSV, YouTube, SMS ---------------------------------------------------------------------------------------


def _delimiter(header_line: str, ext: str) -> str:
    if ext == ".tsv":
        return "\t"
    counts = {d: header_line.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


CSV_FIELD_LIMIT = 16 * 1024 * 1024


def _csv_records(stream, path: Path, rows: _Rows) -> Iterator[tuple[int, list[str], list[str]]]:
    """(start line, header, fields) for each CSV record, reporting malformed records as errors."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    # Fields past the 64 KiB content limit are reported per record (csv's own limit, 128 KiB, would stop the file).
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    try:
        first = text.readline()
        delimiter = _delimiter(first, path.suffix.lower())
        # strict: a stray quote is an error (at the record where it opened) rather than rows merged into one field
        reader = csv.reader(itertools.chain([first], text), delimiter=delimiter, strict=True)
        header: list[str] | None = None
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # Where the next record starts is unknown after this (inside a quoted field, its lines would read as
                # records of their own): stop here rather than import fragments.
                rows.error(start, f"malformed CSV ({exc}); the rest of the file was not read")
                return
            if header is None:
                header = [h.strip() for h in fields]
                continue
            if not fields or not any(f.strip() for f in fields):
                rows.skip("blank line")
                continue
            if len(fields) != len(header):
                rows.error(start, f"has {len(fields)} fields where the header has {len(header)}")
                continue
            yield start, header, fields
    finally:
        text.detach()  # the caller owns and closes the file


def _read_csv(stream, path: Path, rows: _Rows, mapping: Mapping[str, str], *, preset: str | None = None) -> None:
    records = _csv_records(stream, path, rows)
    try:
        start, header, fields = next(records)
    except StopIteration:
        return
    columns = _csv_columns(header, mapping, rows)
    if columns is None:
        return
    names = {target: column for target, column in columns.items()}
    index = {target: header.index(column) for target, column in columns.items()}
    video = _youtube_video(path) if preset == "youtube" else None
    record_number = 0
    for start, header, fields in itertools.chain([(start, header, fields)], records):
        record_number += 1
        values = {t: fields[i] for t, i in index.items()}
        label = rows.label(values.pop("label"), start, names["label"])
        if video is not None:
            source, record_id = f"youtube:{video}", f"youtube-{video.lower()}-{record_number:04d}"
        else:
            source, record_id = values.get("source") or path.stem, values.get("id")
        values.pop("source", None)
        values.pop("id", None)
        rows.add(start, values, label, source=source, id=record_id, names=names)


def _csv_columns(header: list[str], mapping: Mapping[str, str], rows: _Rows) -> dict[str, str] | None:
    """Target -> column name. A mapping must name existing columns; without one, columns are found by name."""
    lowered = {h.lower(): h for h in header}
    columns: dict[str, str] = {}
    missing = []
    for target, column in mapping.items():
        found = column if column in header else lowered.get(column.lower())
        if found is None:
            missing.append(f"{column!r} (for {target})")
        else:
            columns[target] = found
    if missing:
        rows.error(1, f"no column {', '.join(missing)}; the columns are: {', '.join(header)}")
        return None
    taken = set(columns.values())
    for target, guesses in CSV_GUESSES.items():
        if target in columns:
            continue
        found = next((lowered[g] for g in guesses if g in lowered and lowered[g] not in taken), None)
        if found is not None:
            columns[target] = found
            taken.add(found)
    if not mapping:
        # Columns named exactly like Comment fields need no mapping.
        for field in COMMENT_FIELDS:
            if field not in columns and field in lowered and lowered[field] not in taken:
                columns[field] = lowered[field]
    for target in ("content", "label"):
        if target not in columns:
            rows.error(1, f"no {target} column (looked for {', '.join(CSV_GUESSES[target])}; the columns are: "
                          f"{', '.join(header)}); map one, e.g. {target}=COLUMN")
            return None
    return columns


def _youtube_video(path: Path) -> str:
    match = re.match(r"(?i)youtube\d*-(.+)$", path.stem)
    return match.group(1) if match else path.stem


def _read_youtube(stream, path: Path, rows: _Rows, mapping: Mapping[str, str]) -> None:
    # DATE is left out on purpose: in the Eminem file it is empty for every spam comment.
    _read_csv(stream, path, rows, {"content": "CONTENT", "label": "CLASS", "author": "AUTHOR"}, preset="youtube")


def _read_sms(stream, path: Path, rows: _Rows, mapping: Mapping[str, str]) -> None:
    # label<TAB>text, split at the first tab only; no CSV quoting, since messages contain bare quotes.
    for number, raw in enumerate(stream, 1):
        line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
        if number == 1:
            line = line.lstrip("\ufeff")
        if not line.strip():
            rows.skip("blank line")
            continue
        label_text, tab, text = line.partition("\t")
        if not tab:
            rows.error(number, "no tab between label and text")
            continue
        label = rows.label(label_text, number)
        rows.add(number, {"content": text}, label, source=path.stem, id=f"{path.stem}-{number}")


# --- XML exports ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Node:
    ns: str
    name: str
    attrs: dict[str, str]
    line: int
    parts: list[str] = dataclasses.field(default_factory=list)
    children: list["_Node"] = dataclasses.field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def child(self, name: str, ns_prefix: str | None = None) -> "_Node | None":
        for node in self.children:
            if node.name == name and (ns_prefix is None or node.ns.startswith(ns_prefix)):
                return node
        return None

    def text_of(self, name: str, ns_prefix: str | None = None) -> str | None:
        node = self.child(name, ns_prefix)
        return None if node is None else node.text


class _Collector(ContentHandler):
    """Streams an XML file, building small trees for the elements `wanted(path)` selects, handing each to `emit`.

    Only the selected subtrees are kept in memory, so a large export streams.
    """

    def __init__(self, wanted: Callable[[tuple[str, ...]], bool], emit: Callable[[_Node], None]):
        super().__init__()
        self._wanted = wanted
        self._emit = emit
        self._path: list[str] = []
        self._stack: list[_Node] = []
        self._locator = None

    def setDocumentLocator(self, locator):
        self._locator = locator

    @property
    def line(self) -> int:
        return self._locator.getLineNumber() if self._locator else 0

    def startElementNS(self, name, qname, attrs):
        ns, local = name
        self._path.append(local)
        if self._stack or self._wanted(tuple(self._path)):
            node = _Node(ns or "", local, {key[1]: value for key, value in attrs.items()}, self.line)
            if self._stack:
                self._stack[-1].children.append(node)
            self._stack.append(node)

    def characters(self, content):
        if self._stack:
            self._stack[-1].parts.append(content)

    def endElementNS(self, name, qname):
        self._path.pop()
        if self._stack:
            node = self._stack.pop()
            if not self._stack:
                self._emit(node)


def _parse_xml(stream, rows: _Rows, wanted, emit) -> None:
    parser = defusedxml.sax.make_parser()
    parser.setFeature(feature_namespaces, True)
    parser.forbid_dtd = True  # no export format needs a DTD, and refusing it closes entity tricks early
    parser.forbid_entities = True
    parser.forbid_external = True
    handler = _Collector(wanted, emit)
    parser.setContentHandler(handler)
    try:
        parser.parse(stream)
    except SAXException as exc:
        line = exc.getLineNumber() if hasattr(exc, "getLineNumber") else handler.line
        rows.error(line or 0, f"malformed XML ({exc.getMessage()}); nothing after this point was read")
    except DefusedXmlException as exc:
        rows.error(handler.line, f"refused XML: {type(exc).__name__} (DTDs and entity declarations are not accepted)")


# WordPress comment_approved values other than spam/1, with why they are not training labels.
_WXR_SKIP = {"0": "pending moderation", "trash": "in the trash", "post-trashed": "on a trashed post"}


def _read_wxr(stream, path: Path, rows: _Rows, mapping: Mapping[str, str]) -> None:
    def emit(item: _Node) -> None:
        post = {
            "post_title": item.text_of("title"),
            "permalink": (item.text_of("link") or "").strip(),
            "post_text": (item.text_of("encoded", RSS_CONTENT_NAMESPACE) or "")[:MAX_POST_TEXT_CHARS],
        }
        for node in item.children:
            if node.name == "comment" and node.ns.startswith(WXR_NAMESPACE):
                _wxr_comment(node, post, path, rows)

    _parse_xml(stream, rows, lambda p: p[-1] == "item" and p[-2:-1] == ("channel",), emit)


_WXR_FIELDS = {"content": "comment_content", "author": "comment_author", "author_email": "comment_author_email",
               "author_url": "comment_author_url", "user_ip": "comment_author_IP", "comment_type": "comment_type",
               "created_at": "comment_date_gmt"}


def _wxr_comment(node: _Node, post: dict[str, str], path: Path, rows: _Rows) -> None:
    approved = (node.text_of("comment_approved", WXR_NAMESPACE) or "").strip()
    if approved == "spam":
        label = "spam"
    elif approved == "1":
        label = "ham"
    else:
        rows.skip(f"wordpress comment_approved={approved or 'missing'}"
                  + (f" ({_WXR_SKIP[approved]})" if approved in _WXR_SKIP else ""))
        return
    fields: dict[str, Any] = {k: node.text_of(tag, WXR_NAMESPACE) for k, tag in _WXR_FIELDS.items()}
    for key in ("author", "author_email", "author_url", "user_ip", "comment_type"):
        if fields[key] is not None:
            fields[key] = fields[key].strip()
    gmt = (fields["created_at"] or "").strip()
    # WordPress writes a zero date for comments whose GMT time it never knew.
    fields["created_at"] = None if not gmt or gmt.startswith("0000-00-00") else gmt.replace(" ", "T") + "+00:00"
    fields.update({k: v for k, v in post.items() if v})
    names = {k: "wp:" + v for k, v in _WXR_FIELDS.items()}
    names.update(post_title="item title", permalink="item link", post_text="item content:encoded")
    rows.add(node.line, fields, label, source=path.stem, id=node.text_of("comment_id", WXR_NAMESPACE),
             names=names)


def _read_disqus(stream, path: Path, rows: _Rows, mapping: Mapping[str, str]) -> None:
    threads: dict[str, dict[str, str]] = {}

    def emit(node: _Node) -> None:
        if node.name == "thread":
            threads[node.attrs.get("id", "")] = {"permalink": (node.text_of("link") or "").strip(),
                                                 "post_title": (node.text_of("title") or "").strip()}
        elif node.name == "post":
            _disqus_post(node, threads, path, rows)

    _parse_xml(stream, rows, lambda p: len(p) == 2 and p[1] in ("thread", "post"), emit)


def _disqus_flag(node: _Node, name: str, rows: _Rows) -> bool | None:
    value = (node.text_of(name) or "").strip().lower()
    if value in ("true", "false"):
        return value == "true"
    if not value and name == "isDeleted":
        return False
    rows.error(node.line, f"{name}: {value or 'missing'!r} is not true or false")
    return None


def _disqus_post(node: _Node, threads: dict[str, dict[str, str]], path: Path, rows: _Rows) -> None:
    spam = _disqus_flag(node, "isSpam", rows)
    deleted = _disqus_flag(node, "isDeleted", rows)
    if spam is None or deleted is None:
        return
    if deleted and not spam:
        # Removed by a moderator without being called spam: off-topic, a duplicate, a retraction... not a label.
        rows.skip("disqus isDeleted=true, isSpam=false")
        return
    author = node.child("author")
    fields: dict[str, Any] = {
        "content": node.text_of("message"),
        "author": (author.text_of("name") or "").strip() if author else None,
        "author_email": (author.text_of("email") or "").strip() if author else None,
        "user_ip": (node.text_of("ipAddress") or "").strip(),
        "created_at": (node.text_of("createdAt") or "").strip() or None,
    }
    thread = node.child("thread")
    if thread is not None:
        fields.update({k: v for k, v in threads.get(thread.attrs.get("id", ""), {}).items() if v})
    names = {"content": "message", "author": "author/name", "author_email": "author/email", "user_ip": "ipAddress",
             "created_at": "createdAt", "permalink": "thread link", "post_title": "thread title"}
    rows.add(node.line, fields, "spam" if spam else "ham", source=path.stem, id=node.attrs.get("id"), names=names)


_READERS: dict[str, Callable[..., None]] = {
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "sms": _read_sms,
    "youtube": _read_youtube,
    "wxr": _read_wxr,
    "disqus": _read_disqus,
}


# --- file plumbing -------------------------------------------------------------------------------------------


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(SNIFF_BYTES)


class _Counting(io.RawIOBase):
    """A byte stream that reports how much has been read, for progress bars."""

    def __init__(self, raw, progress: Callable[[int], None]):
        self._raw = raw
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self._progress(n)
        return n
