"""Hashed features for comments: word and character n-grams plus named spam signals, with no vocabulary.

One extraction function serves both the scikit-learn transformer (training, batch scoring) and the fast
single-comment scorer, so the two can never disagree. It must never read a field that leaks the label in the
training corpora (the YouTube `date`), and it treats the comment text as hostile input (bounded work per call).
"""
from __future__ import annotations

import dataclasses
import html
import math
import re
import unicodedata
import zlib
from itertools import chain, repeat
from typing import Any, Iterable, NamedTuple, Sequence
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from training.schema import Comment

SIGNAL_GROUPS = ("links", "unicode", "html", "shape", "contact", "author", "meta")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides the feature vector; stored in artifact metadata so a model re-featurises alike."""

    n_features: int = 2**20
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    signals: tuple[str, ...] = SIGNAL_GROUPS
    author_name: bool = False  # words of the author's display name as features
    word_weight: float = 1.0  # each group is L2-normalised, then scaled by its weight
    char_weight: float = 1.0
    signal_weight: float = 1.0
    max_chars: int = 20000  # longer content is cut before n-grams, bounding the work per comment
    fast_submit_seconds: float = 3.0

    def __post_init__(self):
        if self.n_features <= 0 or self.n_features & (self.n_features - 1) or self.n_features > 2**31:
            raise ValueError("n_features must be a power of two no larger than 2**31")
        for name in ("word_ngrams", "char_ngrams"):
            lo, hi = getattr(self, name)
            object.__setattr__(self, name, (int(lo), int(hi)))
            if lo < 1 or hi < lo:
                raise ValueError(f"{name} must be (low, high) with 1 <= low <= high")
        if self.word_ngrams[1] > 2:
            raise ValueError("word_ngrams supports unigrams and bigrams only")
        unknown = set(self.signals) - set(SIGNAL_GROUPS)
        if unknown:
            raise ValueError(f"unknown signal groups: {sorted(unknown)}")
        object.__setattr__(self, "signals", tuple(self.signals))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["word_ngrams"] = list(self.word_ngrams)
        d["char_ngrams"] = list(self.char_ngrams)
        d["signals"] = list(self.signals)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("word_ngrams", "char_ngrams", "signals"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


# ---------------------------------------------------------------------------------------------------------------
# Normalisation: what spammers do to dodge filters, undone.

_ZERO_WIDTH = "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u202a\u202b\u202c" \
              "\u202d\u202e\u2066\u2067\u2068\u2069\u034f"
_ZW_RE = re.compile("[" + _ZERO_WIDTH + "]")

# Cyrillic and Greek letters that look like Latin ones (a subset of Unicode's confusables that matters for text).
_CONFUSABLES = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w",
    "ɡ": "g", "ո": "n", "ս": "u", "ց": "g", "օ": "o", "ᴠ": "v", "ʏ": "y", "ı": "i",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "У": "Y", "Х": "X", "І": "I", "Ї": "I", "Ј": "J", "Ѕ": "S", "Ԁ": "D", "Һ": "H", "Ӏ": "l",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ω": "w", "γ": "y", "η": "n",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}
_CONFUSABLE_TABLE = {ord(k): v for k, v in _CONFUSABLES.items()}
_MIXED_SCRIPT_RE = re.compile(r"[a-zA-Z][\u0370-\u03ff\u0400-\u052f]|[\u0370-\u03ff\u0400-\u052f][a-zA-Z]")
_OTHER_SCRIPT_RE = re.compile("[\u0250-\u02af\u0370-\u058f\u1d00-\u1d7f]")
_STYLED_RE = re.compile("[\uff01-\uff5e\U0001d400-\U0001d7ff\u24b6-\u24e9\U0001f130-\U0001f189]")

_TAG_RE = re.compile(r"<\s*(/?)\s*([a-zA-Z][a-zA-Z0-9]*)\b[^<>]{0,500}>|<!--.{0,2000}?-->", re.S)
_HREF_RE = re.compile(r"""href\s*=\s*["']?([^"'\s<>]+)""", re.I)
_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});?")
_RUN_RE = re.compile(r"(.)\1\1")  # three alike in a row: a run for _collapse_runs to cut


class Normalised(NamedTuple):
    text: str  # folded, lower-cased, tags removed, entities decoded, whitespace collapsed
    cased: str  # the same before lower-casing (for the capitals ratio)
    hrefs: list[str]
    counts: dict[str, int]


def normalise(content: str, max_chars: int = 20000) -> Normalised:
    """Undo the usual disguises: HTML tags and entities, compatibility forms (NFKC: full-width, styled letters),
    zero-width and direction characters, and Latin look-alikes from other scripts."""
    content = content[:max_chars]
    counts = {}
    hrefs: list[str] = []
    if "<" in content:
        # One scan: split() gives [text, close, name, text, close, name, ..., text] (None for an HTML comment).
        parts = _TAG_RE.split(content)
        counts["html_tags"] = n_tags = len(parts) // 3
        counts["html_links"] = sum(1 for close, name in zip(parts[1::3], parts[2::3])
                                   if not close and name and name.lower() == "a")
        if n_tags:
            hrefs = [html.unescape(h) if "&" in h else h for h in _HREF_RE.findall(content)]
            content = " ".join(parts[::3])
    if "&" in content:
        counts["html_entities"] = len(_ENTITY_RE.findall(content))
        content = html.unescape(content)
    # A trailing byte-order mark is an artefact of some platforms' APIs, not a trick.
    content = content.rstrip("\ufeff")
    if not content.isascii():
        if _ZW_RE.search(content):
            counts["zero_width"] = len(_ZW_RE.findall(content))
            content = _ZW_RE.sub("", content)
        if _STYLED_RE.search(content):
            counts["styled_unicode"] = len(_STYLED_RE.findall(content))
        content = unicodedata.normalize("NFKC", content)
        if _OTHER_SCRIPT_RE.search(content):
            if _MIXED_SCRIPT_RE.search(content):
                counts["mixed_script"] = len(_MIXED_SCRIPT_RE.findall(content))
            content = content.translate(_CONFUSABLE_TABLE)
    cased = " ".join(content.split())
    text = cased.lower()
    # "!!!!!!!!" or "soooooo" would otherwise flood the character n-grams with one repeated gram; runs are kept at
    # three characters and counted as a signal instead.
    if _RUN_RE.search(text):  # most texts have no run, and a search is far cheaper than a substitution
        text, counts["repeated_chars"] = _collapse_runs(text)
    return Normalised(text, cased, hrefs, counts)


def _collapse_runs(text: str) -> tuple[str, int]:
    r"""Every run of three or more of a character cut to three, and the number of runs: what a substitution of
    (.)\1{2,} by three copies of the group gives (the tests hold the two equal), worked out over the code points
    as arrays. The substitution scans every position with backtracking and expands its template in Python per run:
    several times slower on a long text. `text` holds a run (three alike in a row)."""
    c = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    same = c[1:] == c[:-1]  # same[i]: c[i + 1] is c[i]
    triple = same[1:] & same[:-1]  # triple[i]: c[i], c[i + 1] and c[i + 2] alike
    runs = int(triple[0]) + int(np.count_nonzero(triple[1:] > triple[:-1]))  # triples that open a run
    keep = np.ones(c.shape[0], bool)
    keep[3:] = ~(triple[:-1] & same[2:])  # a fourth alike in a row, and any after it
    return c[keep].tobytes().decode("utf-32-le"), runs


# ---------------------------------------------------------------------------------------------------------------
# Named signals.

# Bare "name.tld" counts as a link only for these endings: country codes that are common English words
# ("in", "it", "to", "me", "be", "no", "so") would turn "great song.it was" into a link.
_TLDS = ("com|net|org|info|biz|ru|de|uk|co|io|tv|cc|xyz|tk|ml|ga|cf|gq|top|club|online|site|shop|store|"
         "live|ly|gl|ws|fm|pl|fr|es|nl|br|cn|jp|kr|vn|ph|pk|ca|au|eu|mobi|pro|link|click|win|bid|"
         "loan|work|space|website|tech|app|dev|blog|ninja|gd|ch|se|fi|dk|cz|hu|ro|ua|kz|tw|hk|sg")
# Written-out links ("example dot com", "www . site . com") with the endings spammers use.
_OBF_TLDS = "com|net|org|info|biz|ru|xyz|tk|online|site|club|top|shop|store|io|ly|gl|co\\.uk|uk|tv"
_URL_RE = re.compile(
    r"(?:https?://|www\.)[^\s<>\"'()\[\]{}]+"
    r"|(?<![@\w.-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:" + _TLDS + r")\b(?:/[^\s<>\"']*)?"
)
_OBFUSCATED_RE = re.compile(
    r"\b(?:www\s*(?:\s\.\s*|\.\s+|\(\s*(?:dot|\.)\s*\)|\[\s*(?:dot|\.)\s*\]|\s+dot\s+)\s*)?"
    r"([a-z0-9][a-z0-9-]{1,62})"
    r"\s*(?:\s\.\s*|\.\s+|\(\s*(?:dot|\.)\s*\)|\[\s*(?:dot|\.)\s*\]|\{\s*(?:dot|\.)\s*\}|\s+dot\s+|\s*\bd0t\b\s*)"
    r"\s*(" + _OBF_TLDS + r")\b"
)
_TIMESTAMP_RE = re.compile(r"[?&#]t=\d")
# Necessary conditions of the link patterns above, far cheaper to scan for: most comments have no link, and the
# full patterns cost tens of microseconds per comment. A written-out link always has its ending right after a
# dot, a closing bracket or "dot"/"d0t" (spaces between allowed; `_written_out_hint` then also wants a space
# beside the dot, so a plain link does not set it off); a plain one has "://", "www." or ".ending".
_URL_HINT_RE = re.compile(r"://|www\.|\.(?:" + _TLDS + r")\b")
# Two patterns rather than one alternation: each opens on a character class or a literal the engine skips to.
_OBF_HINT_MARK_RE = re.compile(r"[.)\]}]\s*(?:" + _OBF_TLDS + r")\b")
_OBF_HINT_DOT_RE = re.compile(r"d[o0]t\s*(?:" + _OBF_TLDS + r")\b")
_DIGIT_RE = re.compile(r"\d")  # phone numbers and amounts of money both need one
# "w w w" and "h t t p : / /": spaced out, so a plain "http://" is not one.
_SPACED_WWW_RE = re.compile(r"\bw\s+w\s+w\b")
_SPACED_HTTP_RE = re.compile(r"h(?<!\wh)\s*t\s*t\s*p\s*s?\s*:\s*/\s*/")  # \bh..., opening on its literal
_SHORTENERS = frozenset(
    "bit.ly goo.gl tinyurl.com t.co ow.ly is.gd buff.ly adf.ly bit.do shorturl.at cutt.ly rebrand.ly tiny.cc "
    "rb.gy t.ly v.gd lnkd.in shorte.st bc.vc ouo.io soo.gd clck.ru qps.ru u.to x.co tr.im po.st mcaf.ee "
    "su.pr db.tt j.mp fb.me youtu.be".split()
)
_PHONE_RE = re.compile(r"(?<![\w+])(?:\+?\d[\d\-. ()]{7,}\d)(?!\w)")
_PHONE_HINT_RE = re.compile(r"\d[\d\-. ()]{7,}\d")  # opens with a digit, so the engine skips to digits
_CURRENCY = "$£€¥₹"
_MONEY_SYMBOL_RE = re.compile(r"[$£€¥₹]\s?\d|\d\s?[$£€¥₹]")
_MONEY_WORD_RE = re.compile(r"\d\s?(?:usd|dollars?|bucks|pounds?|gbp|eur|euros?)\b")
_EMAIL_RE = re.compile(r"\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b")
_HOST_END_RE = re.compile(r"[/?#:]")
# A capitalised word of three or more letters (as \b[A-Z]{3,}\b), written to open with its first capital so the
# engine skips to capitals; the look-behind checks the character before it.
_CAPS_WORD_RE = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]{2,}(?!\w)")


def _urls(text: str) -> list[str]:
    """_URL_RE.findall(text) over the space-separated tokens that can hold a link: a link never spans a space (the
    normalised text has no other whitespace) and holds a dot or a slash, and the look-behind sees a space before a
    token either way. Most of a long text is skipped."""
    return _URL_RE.findall(" ".join([t for t in text.split(" ") if "." in t or "/" in t]))


def _written_out_hint(text: str) -> bool:
    """Whether `text` may hold a written-out link: an ending after "dot", a bracket, or a dot with a space beside
    it (the normalised text's only whitespace is single spaces)."""
    if "d" in text and _OBF_HINT_DOT_RE.search(text):
        return True
    for m in _OBF_HINT_MARK_RE.finditer(text):
        at = m.start()
        if text[at] != "." or text[at + 1] == " " or (at and text[at - 1] == " "):
            return True
    return False


def _host(url: str) -> str:
    u = url.lower()
    if "://" in u:
        u = u.split("://", 1)[1]
    host = _HOST_END_RE.split(u, maxsplit=1)[0]
    host = host.strip(".")
    if host.startswith("www."):
        host = host[4:]
    return host


def _page_ids(permalink: str) -> tuple[str, ...]:
    """Strings that identify a page in links to it, lower-cased: the long query values when the query names the
    page (a video id in ?v=...), otherwise host + path and its last segment when long enough. Host + path alone
    would take a link to any video ("youtube.com/watch") for one to this page."""
    parts = urlsplit(permalink.strip().lower())
    host = parts.netloc.rsplit("@", 1)[-1].split(":", 1)[0].removeprefix("www.")
    path = parts.path.rstrip("/")
    ids = {v for _, v in parse_qsl(parts.query) if len(v) >= 6}
    if not ids and host and len(path) > 1:
        ids.add(host + path)
        last = path.rsplit("/", 1)[-1]
        if len(last) >= 6:
            ids.add(last)
    return tuple(ids)


def _bucket(n: int, top: int) -> str:
    return str(n) if n < top else f"{top}+"


class Signal(NamedTuple):
    key: str  # hashed name, also the explanation label
    value: float


# The signals nearly every comment has, made once.
_LINK_COUNTS = [Signal("links:" + _bucket(n, 3), 1.0) for n in range(4)]
_LENGTHS = [Signal(f"length:{n}", 1.0) for n in range(13)]


def signals(comment: Comment, norm: Normalised, config: FeatureConfig) -> list[Signal]:
    """Named signals that spam finds hard to hide. Each is a one-hot or small-valued feature with a readable key."""
    groups = config.signals
    text = norm.text
    out: list[Signal] = []
    add = out.append
    counts = norm.counts
    own_anchors = 0
    if "links" in groups:
        # Cheap substring tests first: most comments have no link at all and each regex scan costs microseconds.
        urls = _urls(text) if ("." in text or "/" in text) and _URL_HINT_RE.search(text) else []
        if norm.hrefs:
            urls += [h.lower() for h in norm.hrefs]
        obfuscated = _OBFUSCATED_RE.findall(text) if _written_out_hint(text) else []
        spaced = ("w w w" in text and _SPACED_WWW_RE.search(text) is not None) or (
            ":" in text and any(" " in m.group() for m in _SPACED_HTTP_RE.finditer(text)))
        # Commenters quote the page they comment on (a link to it, or to a moment of a video: "&t=2m19s") and
        # platforms wrap such links in markup of their own; spam links elsewhere. A link to this page is a signal
        # of its own: it adds to no link count, domain or HTML count.
        external, to_page = urls, False
        if urls and comment.permalink:
            ids = _page_ids(comment.permalink)
            external = [u for u in urls if not any(i in u for i in ids)]
            to_page = len(external) < len(urls)
            if to_page:
                own_anchors = sum(1 for h in norm.hrefs if any(i in h.lower() for i in ids))
        n_links = len(external) + len(obfuscated)
        add(_LINK_COUNTS[min(n_links, 3)])
        hosts = set()
        if n_links:
            hosts = {_host(u) for u in external}
            hosts.update(f"{name}.{tld}" for name, tld in obfuscated)
            hosts.discard("")
        if hosts:
            add(Signal("domains:" + _bucket(len(hosts), 3), 1.0))
            shown = sorted(hosts)[:10]
            for h in shown:
                add(Signal("domain:" + h, 1.0))
            for tld in sorted({h.rsplit(".", 1)[-1] for h in shown}):
                add(Signal("tld:" + tld, 1.0))
            if hosts & _SHORTENERS:
                add(Signal("shortener", 1.0))
        if to_page:
            add(Signal("link_to_this_page", 1.0))
        if urls and any(_TIMESTAMP_RE.search(u) for u in urls):
            add(Signal("link_timestamp", 1.0))
        if obfuscated or spaced:
            add(Signal("obfuscated_link", 1.0))
    if "unicode" in groups:
        for name in ("zero_width", "styled_unicode", "mixed_script"):
            if counts.get(name):
                add(Signal(name, 1.0))
    if "html" in groups:
        for name in ("html_tags", "html_links", "html_entities"):
            n = counts.get(name, 0)
            if own_anchors and name != "html_entities":  # an anchor to this page: one link, two tags
                n = max(0, n - (own_anchors if name == "html_links" else 2 * own_anchors))
            if n:
                add(Signal(f"{name}:" + _bucket(n, 3), 1.0))
    if "shape" in groups:
        add(_LENGTHS[min(len(text).bit_length(), 12)])
        repeats = counts.get("repeated_chars", 0)
        if repeats:
            add(Signal("repeated_chars:" + _bucket(repeats, 3), 1.0))
        raw = norm.cased.encode("utf-8", "ignore")
        letters = len(raw) - len(raw.translate(None, _ASCII_LETTERS))
        if letters >= 8:
            upper = len(raw) - len(raw.translate(None, _ASCII_UPPER))
            ratio = upper / letters
            if ratio >= 0.3:
                add(Signal("capitals:" + (">=60%" if ratio >= 0.6 else ">=30%"), 1.0))
            if upper >= 3:
                caps_words = len(_CAPS_WORD_RE.findall(norm.cased))
                if caps_words:
                    add(Signal("caps_words:" + _bucket(caps_words, 3), 1.0))
    if "contact" in groups:
        if _DIGIT_RE.search(text):
            if _PHONE_HINT_RE.search(text) and _PHONE_RE.search(text):
                add(Signal("phone_number", 1.0))
            if _MONEY_WORD_RE.search(text) or (any(c in text for c in _CURRENCY) and _MONEY_SYMBOL_RE.search(text)):
                add(Signal("money", 1.0))
        if "@" in text and _EMAIL_RE.search(text):
            add(Signal("email_in_text", 1.0))
    if "author" in groups:
        if comment.author_url:
            host = _host(comment.author_url)
            add(Signal("author_url", 1.0))
            if host:
                add(Signal("author_url_domain:" + host, 1.0))
                if host in _SHORTENERS:
                    add(Signal("author_url_shortener", 1.0))
        if comment.author_email and "@" in comment.author_email:
            add(Signal("author_email_domain:" + comment.author_email.rsplit("@", 1)[1].lower(), 1.0))
    if "meta" in groups:
        if comment.comment_type and comment.comment_type != "comment":
            add(Signal("comment_type:" + comment.comment_type, 1.0))
        if comment.honeypot:
            add(Signal("honeypot_filled", 1.0))
        if comment.time_to_submit is not None and comment.time_to_submit < config.fast_submit_seconds:
            add(Signal("fast_submit", 1.0))
    return out


_ASCII_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LETTERS = _ASCII_UPPER + _ASCII_UPPER.lower()


# ---------------------------------------------------------------------------------------------------------------
# Hashing.

_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# The same words with what lies between them: split() gives [between, word, between, word, ..., between].
_WORD_SPLIT_RE = re.compile("(" + _WORD_RE.pattern + ")")
_PRIME = np.uint64(1099511628211)
_SEED_WORD = 0x5157
_SEED_AUTHOR = 0xA07
_SEED_SIGNAL = 0x5165
_BIGRAM = np.array([0xD6E8FEB86659FD93, 0x632BE59BD9B4E019], np.uint64)  # words (a, b) hash to a*A + b*B
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFTS = [np.uint64(n) for n in range(65)]


def _char_hashes(text: str, lo: int, hi: int) -> np.ndarray:
    """64-bit polynomial hashes of the character n-grams (lo..hi) at every position of ` text `.

    The text is padded with spaces on the right, so every position yields one n-gram of each length (those running
    past the end carry extra spaces). The result is (positions, lengths): flattened, it is position-major, all
    lengths at position 0, then at position 1, ... One strided view and one small integer matrix product replace a
    loop per length."""
    cps = np.frombuffer((" " + text + " " * hi).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    rows = cps.shape[0] - hi + 1
    # Overlapping windows as a view of the same buffer (np.ndarray directly: as_strided costs more per call).
    windows = np.ndarray((rows, hi), np.uint64, cps, 0, (8, 8))
    return windows @ _powers(lo, hi)


def _rolling_hashes(padded: str, lo: int, hi: int) -> np.ndarray:
    """_char_hashes' n-gram hashes at every position of an already padded text, flattened position-major, by
    Horner's rule over whole arrays (h = h * P + next character): the same values modulo 2**64 as the matrix
    product, in less time on a long text."""
    cps = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    rows = max(0, cps.shape[0] - hi + 1)
    out = np.empty((rows, hi - lo + 1), np.uint64)
    h = cps[:rows].copy()
    for k in range(1, hi):
        h *= _PRIME
        h += cps[k:k + rows]
        if k + 1 >= lo:
            out[:, k + 1 - lo] = h
    if lo == 1:
        out[:, 0] = cps[:rows]
    return out.ravel()


_POWERS: dict[tuple[int, int], np.ndarray] = {}


def _powers(lo: int, hi: int) -> np.ndarray:
    """Matrix whose column for length n holds P^(n-1) ... P^0 then zeros: windows @ it hashes each n-gram."""
    m = _POWERS.get((lo, hi))
    if m is None:
        m = np.zeros((hi, hi - lo + 1), np.uint64)
        for col, n in enumerate(range(lo, hi + 1)):
            for k in range(n):
                m[k, col] = pow(int(_PRIME), n - 1 - k, 2**64)
        _POWERS[(lo, hi)] = m
    return m


def _str_hashes(items: Sequence[str], seed: int, more: Sequence[str] = (), more_seed: int = 0) -> np.ndarray:
    """CRC-32 of each item's UTF-8 bytes with `seed`, then of each of `more` with `more_seed`, in one array."""
    n, m = len(items), len(more)
    seeds = chain(repeat(seed, n), repeat(more_seed, m))
    try:  # all in C: strict UTF-8 gives the same bytes as surrogatepass for any text without lone surrogates
        return np.fromiter(map(zlib.crc32, map(str.encode, chain(items, more)), seeds), dtype=np.uint64,
                           count=n + m)
    except UnicodeEncodeError:
        return np.fromiter((zlib.crc32(s.encode("utf-8", "surrogatepass"), seed)
                            for s, seed in zip(chain(items, more), seeds)), dtype=np.uint64, count=n + m)


class Layout(NamedTuple):
    """Where an Extraction's entries come from, for explanations. Entries come in this order: `n_uni` word
    unigrams (word i of `words`), `n_bi` bigrams (words i and i + 1), one per author word, `n_c` character n-grams
    (position-major over the padded text, as `_char_hashes` orders them), then one per signal key."""

    pieces: list[str]  # the normalised text as [between, word, between, ..., word, between]
    words: list[str]  # pieces[1::2]
    n_uni: int
    n_bi: int
    author_words: list[str]
    n_c: int
    char_ngrams: tuple[int, int]
    signal_keys: list[str]


class Extraction(NamedTuple):
    """A comment's features as entries: feature `indices[k]` gets `values[k]` added; indices may repeat (hash
    collisions, repeated words), so a feature's value is the sum of its entries."""

    indices: np.ndarray  # int64
    values: np.ndarray  # float64
    layout: Layout | None = None  # with explain=True


def as_comment(item: Any) -> Comment:
    if isinstance(item, Comment):
        return item
    if isinstance(item, str):
        return Comment(content=item)
    if isinstance(item, dict):
        return Comment.from_dict(item)
    raise TypeError(f"expected a Comment, a dict or a str, got {type(item).__name__}")


def extract(comment: Comment | str, config: FeatureConfig | None = None, explain: bool = False) -> Extraction:
    """The feature entries of one comment, plus their layout (for explanations) when `explain`.

    Each group (words and word bigrams, character n-grams, named signals) is scaled by its weight over the square
    root of its number of entries: the L2 norm when entries are distinct. Entries are never aggregated, so the
    scorer's dot product needs no sort; scikit-learn sums repeated indices when it builds the CSR matrix. Every
    step is a handful of whole-array operations: one comment is scored per request, so per-call overhead is the
    cost that counts."""
    config = config or DEFAULT_CONFIG
    comment = as_comment(comment)
    norm = normalise(comment.content, config.max_chars)
    text = norm.text

    pieces: list[str] = []
    if explain:
        pieces = _WORD_SPLIT_RE.split(text)
        words = pieces[1::2]
    else:
        words = _WORD_RE.findall(text)
    wlo, whi = config.word_ngrams
    n_words = len(words)
    n_uni = n_words if wlo <= 1 else 0
    n_bi = n_words - 1 if whi >= 2 and n_words >= 2 else 0
    sigs = signals(comment, norm, config)
    keys = [s.key for s in sigs]
    n_s = len(keys)
    # Words and signal keys are hashed in one pass; each group then takes its slice.
    crcs = _str_hashes(words if n_uni or n_bi else (), _SEED_WORD, keys, _SEED_SIGNAL)
    parts = []
    if n_uni:
        parts.append(crcs[:n_uni])
    if n_bi:  # each word with the next: an (n_bi, 2) view of the same buffer times (A, B)
        parts.append(np.ndarray((n_bi, 2), np.uint64, crcs, 0, (8, 8)) @ _BIGRAM)
    author_words: list[str] = []
    if config.author_name and comment.author:
        author_words = _WORD_RE.findall(normalise(comment.author, 200).text)
        if author_words:
            parts.append(_str_hashes(author_words, _SEED_AUTHOR))
    n_w = n_uni + n_bi + len(author_words)

    clo, chi = config.char_ngrams
    char_h = _char_hashes(text, clo, chi)
    parts.append(char_h)
    n_c = char_h.size
    if n_s:
        parts.append(crcs[crcs.shape[0] - n_s:])

    hashes = np.concatenate(parts, axis=None)  # axis=None flattens the (positions, lengths) character block
    # Multiplicative (Fibonacci) hashing: the top bits of h * odd constant depend on every bit of h, so they make
    # the index; the bit below them makes the sign that keeps collisions unbiased.
    bits = config.n_features.bit_length() - 1
    mixed = hashes
    mixed *= _MIX  # in place: concatenate made a new array
    indices = (mixed >> _SHIFTS[64 - bits]).view(np.int64)
    scale = np.full(hashes.shape[0], config.char_weight / math.sqrt(n_c))  # n_c > 0: the text is padded
    if n_w:
        scale[:n_w] = config.word_weight / math.sqrt(n_w)
    if n_s:
        scale[n_w + n_c:] = [s.value * config.signal_weight for s in sigs]
    # The sign bit moved to the top: copysign takes each entry's scale and that sign.
    np.left_shift(mixed, _SHIFTS[bits], out=mixed)
    values = np.copysign(scale, mixed.view(np.int64), out=scale)

    if not explain:
        return Extraction(indices, values)
    return Extraction(indices, values, Layout(pieces, words, n_uni, n_bi, author_words, n_c, (clo, chi), keys))


def attribute(ex: Extraction, amounts: np.ndarray, word_slots: np.ndarray, other_slots: np.ndarray,
              size: int) -> np.ndarray:
    """Per-entry `amounts` (aligned with ex.indices) summed into `size` slots, in one pass.

    Word occurrence i's unigram, half of each bigram it is part of and the character n-grams it owns (see
    `_char_owner`) go to slot word_slots[i]; the author words then the signals, in order, to `other_slots`; the
    n-grams that touch no word to slot 0. Needs an extraction made with explain=True."""
    layout = ex.layout
    if layout is None:
        raise ValueError("attribute needs extract(..., explain=True)")
    n_uni, n_bi, n_a = layout.n_uni, layout.n_bi, len(layout.author_words)
    half = amounts[n_uni:n_uni + n_bi] * 0.5  # a bigram belongs to both its words
    weights = np.concatenate((amounts[:n_uni], half, amounts[n_uni + n_bi:], half))
    chars = _char_owner(layout.pieces, word_slots, *layout.char_ngrams)
    owners = np.concatenate((word_slots[:n_uni], word_slots[:n_bi], other_slots[:n_a], chars, other_slots[n_a:],
                             word_slots[1:n_bi + 1]))
    return np.bincount(owners, weights=weights, minlength=size)


_OWNER_COLUMNS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _char_owner(pieces: list[str], word_slots: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The slot of each character n-gram, in `_char_hashes` order: that of the word its middle character lies in;
    for an n-gram centred on a space or punctuation, that of a word it touches (the first character's, else the
    last's); 0 when it touches none."""
    lengths = list(map(len, pieces))
    lengths[0] += 1  # the padding of _char_hashes: one space before the text, `hi` after it
    lengths[-1] += hi
    pattern = np.zeros(len(pieces), np.int64)  # pieces alternate [between, word, between, ..., word, between]
    pattern[1::2] = word_slots[:len(pieces) // 2]
    slot = np.repeat(pattern, lengths)  # per character of the padded text
    rows = slot.shape[0] - hi + 1
    windows = np.ndarray((rows, hi), np.int64, slot, 0, (8, 8))
    cols = _OWNER_COLUMNS.get((lo, hi))
    if cols is None:
        lengths_ = np.arange(lo, hi + 1)
        cols = _OWNER_COLUMNS[(lo, hi)] = ((lengths_ - 1) // 2, lengths_ - 1)
    middle = windows[:, cols[0]]
    first = windows[:, :1]
    # Slots are never negative, so an entry's truth is "> 0".
    return np.where(middle, middle, np.where(first, first, windows[:, cols[1]])).ravel()


class Rows(NamedTuple):
    """Many comments' feature entries, row after row: row r's entries are indices[indptr[r]:indptr[r + 1]] and
    the same slice of values, exactly as extract() gives them for that comment (unsummed, in its order)."""

    indptr: np.ndarray  # int64, one more than the rows
    indices: np.ndarray  # int64
    values: np.ndarray  # float64


ROWS_BLOCK = 256  # comments whose arithmetic is done together: enough to spread numpy's per-call cost thin, few
                  # enough that the block's arrays stay in cache


def extract_rows(items: Iterable[Any], config: FeatureConfig | None = None) -> Rows:
    """extract() of many comments at once: the same entries bit for bit, with the hashing, mixing and scaling done
    in whole-array operations over blocks of comments instead of a dozen small ones per comment: about a quarter
    less time per 400-character comment, half less per short one. Normalising, signals and word splitting stay per
    comment. For training matrices and batch scoring; one comment at a time still goes through extract()."""
    config = config or DEFAULT_CONFIG
    parts = []
    block = []
    for item in items:
        block.append(item)
        if len(block) == ROWS_BLOCK:
            parts.append(_block_rows(block, config))
            block = []
    if block or not parts:
        parts.append(_block_rows(block, config))
    if len(parts) == 1:
        return parts[0]
    counts = np.concatenate([np.diff(p.indptr) for p in parts])
    indptr = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Rows(indptr, np.concatenate([p.indices for p in parts]), np.concatenate([p.values for p in parts]))


def _block_rows(items: list[Any], config: FeatureConfig) -> Rows:
    """extract_rows over one block: per comment the text work, then each hashing step once for the block and the
    rows' pieces put together in extract()'s order (words, bigrams, author words, character n-grams, signals)."""
    wlo, whi = config.word_ngrams
    clo, chi = config.char_ngrams
    n_len = chi - clo + 1
    texts, words, keys, authors = [], [], [], []
    n_words, n_keys, n_authors, sig_values = [], [], [], []
    for item in items:
        comment = as_comment(item)
        norm = normalise(comment.content, config.max_chars)
        texts.append(norm.text)
        ws = _WORD_RE.findall(norm.text)
        words += ws
        n_words.append(len(ws))
        sigs = signals(comment, norm, config)
        for s in sigs:
            keys.append(s.key)
            sig_values.append(s.value)
        n_keys.append(len(sigs))
        if config.author_name and comment.author:
            aw = _WORD_RE.findall(normalise(comment.author, 200).text)
            authors += aw
            n_authors.append(len(aw))
        else:
            n_authors.append(0)
    n = len(texts)
    word_h = _str_hashes(words, _SEED_WORD)
    key_h = _str_hashes(keys, _SEED_SIGNAL)
    author_h = _str_hashes(authors, _SEED_AUTHOR) if authors else word_h[:0]
    # Bigrams over the block's whole word list: those spanning two comments are never taken below.
    bi_h = (np.ndarray((len(words) - 1, 2), np.uint64, word_h, 0, (8, 8)) @ _BIGRAM) if len(words) >= 2 \
        else word_h[:0]
    # The texts padded as _char_hashes pads each, one after another: each text's n-grams come position-major, then
    # those of the chi - 1 positions whose n-grams run into the next text, skipped below.
    char_h = _rolling_hashes("".join([" " + t + " " * chi for t in texts]), clo, chi)
    uni = wlo <= 1
    bi = whi >= 2
    pieces = []
    add = pieces.append
    seg_vals, seg_counts, totals = [], [], []
    w_at = a_at = k_at = c_at = 0
    skip = (chi - 1) * n_len
    ww, cw, sw = config.word_weight, config.char_weight, config.signal_weight
    for r in range(n):
        nw, na, nk = n_words[r], n_authors[r], n_keys[r]
        nu = nw if uni else 0
        nb = nw - 1 if bi and nw >= 2 else 0
        if nu:
            add(word_h[w_at:w_at + nu])
        if nb:
            add(bi_h[w_at:w_at + nb])
        if na:
            add(author_h[a_at:a_at + na])
        nc = (len(texts[r]) + 2) * n_len
        add(char_h[c_at:c_at + nc])
        n_w = nu + nb + na
        if n_w:
            seg_vals.append(ww / math.sqrt(n_w))
            seg_counts.append(n_w)
        seg_vals.append(cw / math.sqrt(nc))
        seg_counts.append(nc)
        if nk:
            add(key_h[k_at:k_at + nk])
            seg_vals += [v * sw for v in sig_values[k_at:k_at + nk]]
            seg_counts += [1] * nk
        totals.append(n_w + nc + nk)
        c_at += nc + skip
        w_at += nw
        a_at += na
        k_at += nk
    # As in extract(), worked in place: the block's arrays are large enough for allocations to count.
    mixed = np.concatenate(pieces) if pieces else np.empty(0, np.uint64)
    mixed *= _MIX
    bits = config.n_features.bit_length() - 1
    indices = (mixed >> _SHIFTS[64 - bits]).view(np.int64)
    np.left_shift(mixed, _SHIFTS[bits], out=mixed)
    scale = np.repeat(np.array(seg_vals, np.float64), seg_counts)
    values = np.copysign(scale, mixed.view(np.int64), out=scale)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(totals, out=indptr[1:])
    return Rows(indptr, indices, values)


DEFAULT_CONFIG = FeatureConfig()


class Featurizer(BaseEstimator, TransformerMixin):
    """scikit-learn transformer over comments (Comment, dict or str) to a CSR matrix; `fit` learns nothing."""

    def __init__(self, config: FeatureConfig | None = None):
        self.config = config

    def fit(self, X=None, y=None):
        return self

    def transform(self, X: Iterable[Any]) -> sp.csr_matrix:
        config = self.config or DEFAULT_CONFIG
        rows = extract_rows(X, config)
        X = sp.csr_matrix((rows.values, rows.indices, rows.indptr), shape=(len(rows.indptr) - 1, config.n_features))
        X.sum_duplicates()
        return X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = False
        return tags


def highlight_spans(content: str, word_weights: dict[str, float], max_chars: int = 20000) -> list[dict[str, Any]]:
    """Spans of the ORIGINAL content whose normalised word has a weight, for the console to colour.

    Offsets are found by re-normalising character by character, so a disguised word (full-width, homoglyphs,
    zero-width characters) is still highlighted where it stands in the original text."""
    if not word_weights:
        return []
    folded, starts, ends = _normalise_with_offsets(content[:max_chars])
    out = []
    for mt in _WORD_RE.finditer(folded):
        w = word_weights.get(mt.group())
        if w is None or w == 0.0:
            continue
        a, b = mt.span()
        out.append({"start": starts[a], "end": ends[b - 1], "weight": float(w)})
    return out


def _normalise_with_offsets(content: str) -> tuple[str, list[int], list[int]]:
    """Lower-cased folded text with, for each of its characters, the span of original characters it stands for."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(content)
    tag_spans = {m.start(): m.end() for m in _TAG_RE.finditer(content)} if "<" in content else {}
    while i < n:
        end = tag_spans.get(i)
        if end is not None:
            out.append(" ")
            starts.append(i)
            ends.append(end)
            i = end
            continue
        c = content[i]
        step = 1
        if c == "&":
            m = _ENTITY_RE.match(content, i)
            if m:
                c = html.unescape(m.group())
                step = len(m.group())
        if c in _ZERO_WIDTH:
            i += step
            continue
        piece = unicodedata.normalize("NFKC", c).translate(_CONFUSABLE_TABLE).lower()
        for ch in piece:
            if len(out) >= 3 and out[-1] == out[-2] == out[-3] == ch:
                ends[-1] = i + step  # runs are cut to three, as in normalise(); the last kept one covers the rest
                continue
            out.append(ch)
            starts.append(i)
            ends.append(i + step)
        i += step
    return "".join(out), starts, ends
