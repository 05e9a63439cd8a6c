"""Features: disguises undone (Unicode, HTML, written-out links), named signals, and the two paths agreeing."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from training.features import (DEFAULT_CONFIG, FeatureConfig, Featurizer, attribute, extract, extract_rows,
                               highlight_spans, normalise, signals)
from training.schema import Comment


def keys(text: str, **fields) -> set[str]:
    comment = Comment(content=text, **fields)
    return {s.key for s in signals(comment, normalise(text), DEFAULT_CONFIG)}


def dense(ex) -> np.ndarray:
    out = np.zeros(DEFAULT_CONFIG.n_features)
    np.add.at(out, ex.indices, ex.values)
    return out


@pytest.mark.parametrize("text, domain", [
    ("visit example dot com today", "example.com"),
    ("go to www . cheapdeals . com now", "cheapdeals.com"),
    ("see mysite (dot) net", "mysite.net"),
    ("see mysite [.] org for more", "mysite.org"),
    ("visit example  .  com", "example.com"),
])
def test_written_out_links_are_detected_with_their_domain(text, domain):
    found = keys(text)
    assert "obfuscated_link" in found
    assert "domain:" + domain in found
    assert "links:0" not in found


@pytest.mark.parametrize("text", ["go to w w w . cheapdeals . com", "see h t t p : / / cheapdeals.com",
                                  "look at the site http://example.com/w w w"])
def test_spaced_out_link_prefixes_are_obfuscation(text):
    assert "obfuscated_link" in keys(text)


@pytest.mark.parametrize("text", ["what about that thing at http://example.com/page",
                                  "wow w white at the http://example.com", "see https://example.org/a?b=1 at the top"])
def test_a_plain_link_is_not_obfuscation(text):
    found = keys(text)
    assert "obfuscated_link" not in found
    assert "links:1" in found


def test_sentences_are_not_mistaken_for_links():
    found = keys("I love this. Come on, it is great. In fact the best song.")
    assert "obfuscated_link" not in found
    assert "links:0" in found
    assert not any(k.startswith("domain:") for k in found)


def test_plain_links_shorteners_and_markup():
    found = keys('Win now <a href="http://bit.ly/abc">here</a> and https://www.Example.org/x?y=1 &amp; more')
    assert {"shortener", "domain:bit.ly", "domain:example.org", "links:2", "domains:2", "html_links:1",
            "html_entities:1"} <= found
    assert "html_tags:2" in found


def test_unicode_folding_full_width_zero_width_homoglyphs_nfkc():
    assert normalise("ＦＲＥＥ ｍｏｎｅｙ").text == "free money"
    assert normalise("fr\u200bee mo\u200dney\u2060").text == "free money"
    # Cyrillic а/е/о/р/с and Greek ο look like Latin letters.
    assert normalise("\u0440\u0430ypal \u0441\u03bfupon").text == "paypal coupon"
    assert normalise("ﬁnance ①").text == "finance 1"  # NFKC: ligature and circled digit
    assert normalise("𝐟𝐫𝐞𝐞").text == "free"  # mathematical bold letters
    found = keys("\u0440\u0430ypal fr\u200bee ＦＲＥＥ")
    assert {"mixed_script", "zero_width", "styled_unicode"} <= found


def test_disguised_text_gets_the_same_word_features_as_plain_text():
    words_only = FeatureConfig(signals=())
    plain = extract("free money", words_only)
    tricked = extract("ＦＲ\u200bＥＥ m\u043eney", words_only)
    assert np.allclose(dense(plain), dense(tricked))


def test_trailing_byte_order_mark_is_not_a_trick():
    assert "zero_width" not in keys("nice song\ufeff")
    assert normalise("nice song\ufeff").text == "nice song"


def test_html_entities_are_decoded_and_tags_removed():
    n = normalise("it&#39;s <b>great</b> &lt;3 &amp; fun")
    assert n.text == "it's great <3 & fun"
    assert n.counts["html_tags"] == 2
    assert n.counts["html_entities"] == 3


def test_shape_and_contact_signals():
    found = keys("CALL NOW!!! Win £500 cash, ring 0800 123 4567 or mail me@spam.biz")
    assert {"phone_number", "money", "email_in_text", "repeated_chars:1", "caps_words:2"} <= found
    assert "links:0" in found  # an email address is not a link
    assert "capitals:>=60%" in keys("THIS IS ALL SHOUTING, buy now")
    assert "phone_number" not in keys("see you at 10 tomorrow")


def test_author_and_meta_signals():
    found = keys("hello", author_url="https://www.Casino.example.com/x", author_email="a@Mail.RU",
                 comment_type="trackback", honeypot=True, time_to_submit=0.4)
    assert {"author_url", "author_url_domain:casino.example.com", "author_email_domain:mail.ru",
            "comment_type:trackback", "honeypot_filled", "fast_submit"} <= found
    assert "fast_submit" not in keys("hello", time_to_submit=12.0)


def test_label_leaking_date_is_never_read():
    a = extract(Comment(content="nice song", created_at="2014-01-01T00:00:00"))
    b = extract(Comment(content="nice song"))
    assert np.array_equal(dense(a), dense(b))


def test_transformer_matches_extract_and_is_normalised_per_group():
    texts = ["Check out my channel http://x.co/abc", "nice song", "", "a" * 50]
    X = Featurizer().fit(texts).transform(texts)
    assert X.shape == (4, DEFAULT_CONFIG.n_features)
    for i, t in enumerate(texts):
        assert np.allclose(X[i].toarray().ravel(), dense(extract(t)), atol=1e-15)


ROW_CASES = [
    "", "a", "ok", "nice song", "Check out my channel http://x.co/abc", "visit example dot com today",
    "ＦＲＥＥ ｍｏｎｅｙ", "fr\u200bee рaypal", "<a href='http://spam.example/x'>cheap</a> &amp; more",
    "sooooo goooood!!!!!!", "CALL NOW +44 (0) 7911-123456 for $500", "x" * 3000, "one, two; three... four",
]


@pytest.mark.parametrize("config", [
    DEFAULT_CONFIG,
    FeatureConfig(word_ngrams=(1, 1), char_ngrams=(2, 4), author_name=True, word_weight=0.7, char_weight=1.3,
                  signal_weight=2.0),
    FeatureConfig(word_ngrams=(2, 2), char_ngrams=(4, 4), n_features=2**18, signals=("links", "shape")),
    FeatureConfig(char_ngrams=(1, 2)),
])
def test_rows_of_many_comments_are_each_comments_extraction_bit_for_bit(config):
    from training import features

    comments = [Comment(content=t, author=f"Reader {i} — ÉTÉ", permalink="https://blog.example.org/post-one")
                for i, t in enumerate(ROW_CASES * 25)]  # more than one block, with a block boundary mid-list
    assert len(comments) > features.ROWS_BLOCK
    rows = extract_rows(comments, config)
    assert rows.indptr.shape == (len(comments) + 1,) and rows.indptr[0] == 0
    for i, c in enumerate(comments):
        ex = extract(c, config)
        a, b = rows.indptr[i], rows.indptr[i + 1]
        assert np.array_equal(rows.indices[a:b], ex.indices), ROW_CASES[i % len(ROW_CASES)]
        assert np.array_equal(rows.values[a:b], ex.values), ROW_CASES[i % len(ROW_CASES)]
    empty = extract_rows([], config)
    assert empty.indptr.tolist() == [0] and empty.indices.size == 0 and empty.values.size == 0


def test_rows_match_extract_on_every_shared_corpus_comment():
    from tests.conftest import require_datasets

    root = require_datasets()
    comments = []
    for name in ("youtube", "sms-spam", "spamassassin"):
        with open(root / name / f"{name}.jsonl", encoding="utf-8") as fh:
            comments += [Comment(content=json.loads(line)["text"][:4000]) for line in fh if line.strip()]
    rows = extract_rows(comments)
    for i, c in enumerate(comments):
        ex = extract(c)
        a, b = rows.indptr[i], rows.indptr[i + 1]
        assert np.array_equal(rows.indices[a:b], ex.indices) and np.array_equal(rows.values[a:b], ex.values), i


def test_attribution_adds_up_to_the_features_and_follows_the_words():
    text = "Subscribe to my channel, subscribe!! (c) www.example.com"
    ex = extract(text, explain=True)
    layout = ex.layout
    assert layout.words == ["subscribe", "to", "my", "channel", "subscribe", "c", "www", "example", "com"]
    assert "links:1" in layout.signal_keys
    n_words = len(layout.words)
    word_slots = np.arange(1, n_words + 1)
    other_slots = np.arange(n_words + 1, n_words + 1 + len(layout.signal_keys))
    ones = np.ones(len(ex.indices))
    sums = attribute(ex, ones, word_slots, other_slots, n_words + 1 + len(layout.signal_keys))
    assert sums.sum() == pytest.approx(len(ex.indices))  # every entry lands somewhere, bigrams split in halves
    assert np.all(sums[n_words + 1:] == 1.0)  # one entry per signal
    # Brute force: owner of each n-gram by its middle, first and last characters, as the docstring says.
    lo, hi = DEFAULT_CONFIG.char_ngrams
    padded = " " + layout.pieces[0]
    owner_of_char = [0] * len(padded)
    for i, (word, between) in enumerate(zip(layout.pieces[1::2], layout.pieces[2::2])):
        owner_of_char += [i + 1] * len(word) + [0] * len(between)
    owner_of_char += [0] * hi
    expected = np.zeros(n_words + 1)
    for p in range(len(owner_of_char) - hi + 1):
        for n in range(lo, hi + 1):
            mid, first, last = owner_of_char[p + (n - 1) // 2], owner_of_char[p], owner_of_char[p + n - 1]
            expected[mid or first or last] += 1
    for i in range(n_words):
        expected[i + 1] += 1 + (0.5 if i > 0 else 0) + (0.5 if i < n_words - 1 else 0)
    assert np.allclose(sums[:n_words + 1], expected)
    # Repeated words can share a slot: "subscribe" twice sums into one.
    shared = attribute(ex, ones, np.array([1, 2, 3, 4, 1, 5, 6, 7, 8]), other_slots - 1, n_words + len(other_slots))
    assert shared[1] == pytest.approx(sums[1] + sums[5])


def test_highlight_offsets_point_into_the_original_text():
    content = "Hi <b>ＦＲＥＥ</b> m\u043eney &amp; more"
    spans = highlight_spans(content, {"free": 1.5, "money": -0.5})
    assert [content[s["start"]:s["end"]] for s in spans] == ["ＦＲＥＥ", "m\u043eney"]
    assert [s["weight"] for s in spans] == [1.5, -0.5]


def test_config_round_trip_and_validation():
    cfg = FeatureConfig(n_features=2**18, char_ngrams=(3, 4), signals=("links",))
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        FeatureConfig(n_features=1000)
    with pytest.raises(ValueError):
        FeatureConfig(signals=("nope",))
    small = extract("hello world", cfg)
    assert small.indices.max() < 2**18


def test_huge_content_is_bounded():
    ex = extract("spam " * 20000)
    assert len(ex.indices) < 200000


def test_character_runs_are_cut_and_counted():
    n = normalise("SUBSCRIBE!!!!!!!!!!!!!!!!!!!!!!!!!!! sooooooo")
    assert n.text == "subscribe!!! sooo"
    assert n.counts["repeated_chars"] == 2
    assert highlight_spans("sooooooo good", {"sooo": 1.0}) == [{"start": 0, "end": 8, "weight": 1.0}]


def test_links_to_a_moment_of_a_video():
    found = keys('<a href="http://www.youtube.com/watch?v=KQ6zr6kCPj8&amp;t=2m19s">2:19</a> best part')
    assert {"link_timestamp", "domain:youtube.com"} <= found
    assert "link_timestamp" not in keys("watch my video http://www.youtube.com/watch?v=abc")


def test_links_to_the_page_being_commented_on():
    page = "https://www.youtube.com/watch?v=9bZkp7q19f0"
    assert "link_to_this_page" in keys("best part http://youtu.be/9bZkp7q19f0", permalink=page)
    assert "link_to_this_page" not in keys("see http://youtu.be/otherVideo1", permalink=page)
    blog = "https://blog.example.org/2024/05/my-post/"
    assert "link_to_this_page" in keys("as said in https://blog.example.org/2024/05/my-post#c3", permalink=blog)
    assert "link_to_this_page" not in keys("nice post https://blog.example.org/2024/05/my-post")


REPEAT_RE = re.compile(r"(.)\1{2,}")  # runs of three or more, as a pattern: what _collapse_runs must match


def test_runs_are_cut_to_three_and_counted_exactly_as_the_pattern_does():
    import random

    from training import features as f

    rng = random.Random(7)
    texts = ["aaa", "aaaa", "aaabbb", "!!!!!!!! wow", "sooooo goooood", "xaaay", "🙂🙂🙂🙂🙂", "ééééé", "a  b"]
    for _ in range(3000):
        pieces = range(rng.randrange(1, 12))
        texts.append("".join(rng.choice("ab !é🙂") * rng.choice((1, 1, 2, 3, 4, 7)) for _ in pieces))
    for text in texts:
        if f._RUN_RE.search(text):
            assert f._collapse_runs(text) == REPEAT_RE.subn(r"\1\1\1", text), text
        else:
            assert REPEAT_RE.search(text) is None, text


def test_link_hints_never_skip_a_link_the_full_patterns_find():
    # The cheap pre-checks in signals() must be necessary conditions of the full patterns on real comments.
    from tests.conftest import require_datasets
    from training import features as f

    root = require_datasets()
    texts = []
    for name in ("youtube", "sms-spam"):
        with open(root / name / f"{name}.jsonl", encoding="utf-8") as fh:
            texts += [normalise(json.loads(line)["text"]).text for line in fh if line.strip()]
    texts += ["visit example dot com", "mysite (dot) net", "a.b.c", "see x.co/abc", "call +1 555 123 4567 for $5"]
    texts += ["CALL NOW", "ÉTÉ CAPS", "xABC DEF", "ABCd", "ABC_", "$ 5", "5 €", "10 dollars", "5usd", "+44 (0) 7911-123456"]
    money = re.compile(r"[$£€¥₹]\s?\d|\d\s?[$£€¥₹]|\d\s?(?:usd|dollars?|bucks|pounds?|gbp|eur|euros?)\b")
    caps = re.compile(r"\b[A-Z]{3,}\b")
    for text in texts:
        if f._URL_RE.search(text):
            assert f._URL_HINT_RE.search(text), text
        assert f._urls(text) == f._URL_RE.findall(text), text
        if f._OBFUSCATED_RE.search(text):
            assert f._written_out_hint(text), text
        assert bool(f._RUN_RE.search(text)) == bool(REPEAT_RE.search(text)), text
        if f._PHONE_RE.search(text):
            assert f._DIGIT_RE.search(text) and f._PHONE_HINT_RE.search(text), text
        has_money = bool(f._MONEY_WORD_RE.search(text) or (any(c in text for c in f._CURRENCY)
                                                             and f._MONEY_SYMBOL_RE.search(text)))
        assert has_money == bool(money.search(text)), text
        if has_money:
            assert f._DIGIT_RE.search(text), text
        cased = text.upper()  # the capitals pattern reads the cased text
        assert len(f._CAPS_WORD_RE.findall(cased)) == len(caps.findall(cased)), cased


def test_a_link_to_the_page_commented_on_is_not_a_link():
    page = "https://www.youtube.com/watch?v=KQ6zr6kCPj8"
    text = '<a href="http://www.youtube.com/watch?v=KQ6zr6kCPj8&amp;t=2m19s">2:19</a> best part<br />'
    own = keys(text, permalink=page)
    assert {"link_to_this_page", "link_timestamp", "links:0", "html_tags:1"} <= own
    assert not any(k.startswith(("domain", "tld:", "html_links")) for k in own)
    # The same link under another video is an ordinary link, with its markup.
    other = keys(text, permalink="https://www.youtube.com/watch?v=9bZkp7q19f0")
    assert {"links:1", "domain:youtube.com", "html_links:1", "html_tags:3+"} <= other
    assert "link_to_this_page" not in other
    # A link elsewhere next to one to this page still counts, alone.
    both = keys("see http://youtu.be/KQ6zr6kCPj8 and http://spam.example.com/x", permalink=page)
    assert {"link_to_this_page", "links:1", "domain:spam.example.com"} <= both
    assert "domain:youtu.be" not in both


def test_a_video_page_is_named_by_its_id_not_by_the_watch_path():
    page = "https://www.youtube.com/watch?v=9bZkp7q19f0"
    found = keys("my video https://www.youtube.com/watch?v=abcdefghijk", permalink=page)
    assert "link_to_this_page" not in found and "links:1" in found
