"""The stores under the API: write-behind buffering and dropping, retention trimming, site policy validation."""
from __future__ import annotations

import dataclasses
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.service_support import free_port, service_db  # noqa: F401
from training import rediskeys
from training.checks import CheckRecord, CheckStore, WriteBehind, settled_key
from training.schema import Comment, ValidationError
from training.settings import Settings
from training.sites import SiteStore, defaults, merge


@pytest.fixture()
def r(service_db):
    return service_db


def record(i: int, score: float = 0.7, created_at: float | None = None, **kw) -> CheckRecord:
    fields = dict(site="https://s.example.com", verdict="unsure", answered="unsure") | kw
    return CheckRecord(id=f"c{i:04d}", comment=Comment(content=f"comment {i}"), score=score, discard=False,
                       model_version="v1", created_at=created_at or time.time(), **fields)


def test_write_behind_buffers_while_redis_is_down_and_drops_when_full():
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0))
    dropped = []
    writer = WriteBehind(CheckStore(dead), max_items=3, on_drop=dropped.append)
    assert all(writer.submit(record(i)) for i in range(3))
    assert writer.submit(record(3)) is False and dropped == [1] and writer.dropped == 1
    assert writer.pending("c0001") is not None and writer.size() == 3
    assert writer.flush(timeout=0.3) is False  # nothing can be written; nothing is lost either
    assert writer.size() == 3
    writer.stop(timeout=2)
    assert not writer._thread.running()


def test_write_behind_writes_in_batches_and_keeps_test_and_trusted_checks_out_of_the_queue(r):
    writer = WriteBehind(CheckStore(r), batch_size=2)
    for i in range(5):
        writer.submit(record(i, score=0.5 + i / 10))
    writer.submit(record(5, is_test=True))
    writer.submit(record(6, trusted=True))
    assert writer.flush(timeout=5)
    store = CheckStore(r)
    assert store.get("c0005").is_test and store.get("c0006").trusted
    items, cursor = store.queue(limit=10)
    assert [x.id for x in items] == [f"c{i:04d}" for i in range(5)] and cursor is None
    assert store.queue_size(verdict="unsure") == 5 and store.queue_size(site="https://other.example") == 0
    writer.stop()


def test_one_record_that_cannot_be_stored_loses_only_itself_and_the_writer_lives_on(r, monkeypatch):
    writer = WriteBehind(CheckStore(r))
    writer.submit(record(1))
    writer.submit(record(2, refs=(("post", "\ud800"),)))  # not text: cannot be serialised
    writer.submit(record(3))
    assert writer.flush(timeout=5) and writer.pending("c0002") is None
    store = CheckStore(r)
    assert store.get("c0001") is not None and store.get("c0002") is None and store.get("c0003") is not None

    dropped = []
    writer.on_drop = dropped.append
    real_write = CheckStore.write
    monkeypatch.setattr(CheckStore, "write", lambda self, records: 1 / 0)  # a bug, not Redis
    writer.submit(record(4))
    assert writer.flush(timeout=5) and dropped == [1] and writer.pending("c0004") is None
    monkeypatch.setattr(CheckStore, "write", real_write)
    writer.submit(record(5))
    assert writer.flush(timeout=5) and store.get("c0005") is not None and writer._thread.running()
    writer.stop()


def test_a_stored_check_reads_back_whole_with_its_expiry(r):
    store = CheckStore(r, retention_days=2)
    full = CheckRecord(
        id="c0100", site="https://s.example.com",
        comment=Comment(content="Grüße, spam? 😀", author="Ann", user_ip="203.0.113.9", honeypot=False,
                        time_to_submit=3.5, user_role="subscriber", site="https://s.example.com"),
        verdict="spam", answered="ham", score=0.123456789012345, discard=True, model_version="v7",
        created_at=1_700_000_000.123456, reasons=({"signal": "links:1", "weight": 1.25},
                                                  {"signal": "(bias)", "weight": -0.5}),
        shadow=True, trusted=False, is_test=True, source="akismet", key_id="k1",
        refs=(("comment_id", "1234"), ("post", "9")))
    plain = record(101)
    assert store.write([full, plain]) == 2
    assert store.get("c0100") == full and store.get("c0101") == plain
    key = rediskeys.CHECK.format(id="c0100")
    assert 2 * 86400 - 5 < r.ttl(key) <= 2 * 86400
    # An undone label reads the check's time from its own hash field to requeue it.
    assert float(r.hget(key, "created_at")) == full.created_at


def test_checks_stored_one_field_per_attribute_still_read_back(r):
    """The layout older versions wrote stays readable for as long as those checks are kept."""
    key = rediskeys.CHECK.format(id="c0200")
    r.hset(key, mapping={
        "id": "c0200", "site": "https://s.example.com", "comment": '{"content": "old one", "author": "Bo"}',
        "verdict": "spam", "answered": "ham", "score": "0.91", "discard": "0", "model_version": "v2",
        "created_at": "1700000000.5", "reasons": '[{"signal": "links:1", "weight": 1.5}]', "shadow": "1",
        "trusted": "0", "is_test": "0", "source": "api", "key_id": "k2", "refs": '{"comment_id": "7"}'})
    got = CheckStore(r).get("c0200")
    assert got == CheckRecord(id="c0200", site="https://s.example.com", comment=Comment(content="old one", author="Bo"),
                              verdict="spam", answered="ham", score=0.91, discard=False, model_version="v2",
                              created_at=1700000000.5, reasons=({"signal": "links:1", "weight": 1.5},), shadow=True,
                              key_id="k2", refs=(("comment_id", "7"),))


def test_a_batch_counts_each_check_once_per_day_site_and_verdict(r):
    from training import activity

    day = 1_700_000_000.0
    other = "https://t.example.com"
    batch = [record(i, created_at=day + i) for i in range(5)]
    batch += [CheckRecord(id=f"t{i}", site=other, comment=Comment(content=f"x{i}"), verdict=v, answered=v, score=0.95,
                          discard=False, model_version="v1", created_at=day + 86400 + i)
              for i, v in enumerate(["spam", "spam", "ham"])]
    CheckStore(r).write(batch)
    first = activity.daily(r, days=2, now=day + 86400)
    assert first["checks"] == [5, 3]
    assert first["verdicts"]["unsure"] == [5, 0] and first["verdicts"]["spam"] == [0, 2]
    assert first["verdicts"]["ham"] == [0, 1]
    assert activity.daily(r, days=2, site=other, now=day + 86400)["checks"] == [0, 3]
    store = CheckStore(r)
    assert store.queue_size() == 8 and store.queue_size(site=other, verdict="spam") == 2
    assert store.queue_size(site="https://s.example.com", verdict="unsure") == 5


def test_a_comment_checked_again_is_queued_once_at_its_newest_check(r):
    """The WordPress plugin's "Check for Spam" rechecks every pending comment: a moderator sees each comment once,
    at its newest check, while every check stays readable by its id."""
    store = CheckStore(r)
    site, other = "https://s.example.com", "https://t.example.com"

    def check(i: int, content: str, verdict: str = "unsure", author: str = "Bo", **kw) -> CheckRecord:
        return dataclasses.replace(record(i, score=0.6 + i / 100, verdict=verdict, answered=verdict, **kw),
                                   comment=Comment(content=content, author=author, author_email="bo@example.com"))

    def queued(**kw) -> list[str]:
        return sorted(c.id for c in store.queue(**kw)[0])

    store.write([check(1, "buy now"), check(2, "hello there")])
    store.write([check(3, "buy now", verdict="spam")])  # rechecked later, by a newer model: another verdict
    assert store.queue_size() == 2 and store.queue_size(site=site, verdict="unsure") == 1  # counted once, at once
    assert queued(site=site) == ["c0002", "c0003"]
    assert queued(site=site, verdict="unsure") == ["c0002"] and queued(verdict="spam") == ["c0003"]
    assert store.get("c0001").comment.content == "buy now"  # still there by its id (a label by id, a guid)
    # Twice in one batch, or a batch that reaches Redis late (a buffer flushed after an outage): the newer check,
    # by its id's time, is the one queued.
    store.write([check(5, "twice"), check(4, "twice")])
    store.write([check(7, "late")])
    store.write([check(6, "late")])
    assert queued(site=site) == ["c0002", "c0003", "c0005", "c0007"] and store.queue_size() == 4
    # A write retried after a failure, or replayed without its scripts, changes nothing.
    store.write([check(1, "buy now"), check(3, "buy now", verdict="spam")])
    r.script_flush()
    store.write([check(1, "buy now")])
    assert queued(site=site) == ["c0002", "c0003", "c0005", "c0007"] and store.queue_size() == 4
    # Another author, another site, or a test or trusted check is no recheck of it.
    store.write([check(8, "hello there", author="Al"), check(9, "hello there", site=other),
                 check(10, "hello there", is_test=True)])
    assert queued(site=site) == ["c0002", "c0003", "c0005", "c0007", "c0008"] and queued(site=other) == ["c0009"]
    # A label on the first check settles the comment: its newer check leaves the queue as well.
    from training import labels as label_store
    from training.labels import LabelStore

    LabelStore(r).put(label_store.for_check(store.get("c0001"), "spam", by="mo"))
    store.settle(store.get("c0001"))
    assert queued(site=site) == ["c0002", "c0005", "c0007", "c0008"]


def test_a_labelled_comment_checked_again_stays_out_of_the_queue_until_its_label_is_taken_back(r):
    """A comment a moderator has labelled, checked again by the platform ("Check for Spam"), is not queued for a
    second label, however long the platform keeps rechecking it; taking the label back (undo) queues the comment
    again, at its newest check, whichever check the label was given by, unless another label still settles it."""
    from training import labels as label_store
    from training.labels import LabelStore

    store, labels = CheckStore(r), LabelStore(r)

    def check(i: int, content: str, verdict: str = "unsure") -> CheckRecord:
        return dataclasses.replace(record(i, verdict=verdict, answered=verdict), comment=Comment(content=content))

    def label(check_id: str, value: str) -> None:  # as service.checking.label_check stores one
        labels.put(label_store.for_check(store.get(check_id), value, by="mo"))
        store.settle(store.get(check_id))

    def queued() -> list[str]:
        return sorted(c.id for c in store.queue()[0])

    store.write([check(1, "first"), check(2, "second")])
    label("c0001", "spam")
    store.write([check(3, "first", verdict="spam"), check(4, "second")])
    assert queued() == ["c0004"] and store.queue_size() == 1
    assert labels.remove("c0001", by="mo") is not None
    assert queued() == ["c0003", "c0004"]  # back at its newest check
    # A label given by the older check's id (the guid the platform kept) settles the comment as well: checked
    # again, it stays out; the label taken back, it returns once, at its newest check.
    label("c0002", "ham")
    assert queued() == ["c0003"]
    store.write([check(5, "second")])
    assert queued() == ["c0003"] and store.queue_size() == 1
    assert labels.remove("c0002", by="mo") is not None
    assert queued() == ["c0003", "c0005"] and store.queue_size() == 2
    # Two checks of one comment labelled: taking one label back leaves the other settling it.
    label("c0003", "spam")
    label("c0001", "spam")
    assert labels.remove("c0003", by="mo") is not None
    assert queued() == ["c0005"]
    # Rechecked for longer than the retention: each recheck keeps the comment settled for another period.
    settled = settled_key(store.get("c0001"))
    r.expire(settled, 5)
    store.write([check(6, "first")])
    assert queued() == ["c0005"] and r.ttl(settled) > 5
    # An undo that lands between a label and its settling leaves the comment as it found it (queued).
    labels.put(label_store.for_check(store.get("c0005"), "ham", by="mo"))
    assert labels.remove("c0005", by="mo") is not None
    store.settle(store.get("c0005"))
    assert queued() == ["c0005"]
    # The last standing label taken back: the comment returns, at its newest check.
    assert labels.remove("c0001", by="mo") is not None
    assert queued() == ["c0005", "c0006"]


def test_an_undo_requeues_the_comment_even_after_its_labelled_check_expired(r, monkeypatch):
    """Rechecks keep a labelled comment settled past its labelled check's retention: taking that label back puts the
    comment's newest check in the queue, and nothing while another label of the comment stands, however the undo's
    own reads interleave with a colleague's label."""
    from training import labels as label_store
    from training.labels import LabelStore

    store, labels = CheckStore(r), LabelStore(r)

    def check(i: int, content: str) -> CheckRecord:
        return dataclasses.replace(record(i), comment=Comment(content=content))

    def label(check_id: str, value: str) -> None:
        labels.put(label_store.for_check(store.get(check_id), value, by="mo"))
        store.settle(store.get(check_id))

    store.write([check(1, "kept")])
    label("c0001", "ham")
    store.write([check(2, "kept")])
    r.delete(rediskeys.CHECK.format(id="c0001"))  # past its retention; its label stays
    assert labels.remove("c0001", by="mo") is not None
    assert [c.id for c in store.queue()[0]] == ["c0002"]
    # A colleague labels the newest check between the undo's look and its script: it stays out of the queue.
    label("c0002", "spam")
    store.write([check(3, "kept")])
    label("c0003", "spam")
    found = labels._requeued
    monkeypatch.setattr(labels, "_requeued", lambda rec: store.get("c0003"))  # what it read before the label
    assert labels.remove("c0002", by="mo") is not None
    monkeypatch.setattr(labels, "_requeued", found)
    assert store.queue()[0] == []


def test_a_comment_labelled_before_the_settled_sets_stays_out_when_checked_again(r):
    """Deployments settled a labelled comment by naming its labelled check as the comment's newest: a recheck after
    the upgrade finds that label and is not queued."""
    from training import labels as label_store
    from training.checks import same_comment_key
    from training.labels import LabelStore

    store = CheckStore(r)
    first = dataclasses.replace(record(1), comment=Comment(content="old"))
    store.write([first])
    LabelStore(r).put(label_store.for_check(first, "spam", by="mo"))
    r.delete(settled_key(first))  # as written before the settled sets
    assert r.get(same_comment_key(first)) == b"c0001"
    store.write([dataclasses.replace(record(2), comment=Comment(content="old"))])
    assert store.queue()[0] == [] and r.sismember(settled_key(first), "c0001")


def test_trim_drops_expired_checks_from_every_queue_index(r):
    store = CheckStore(r, retention_days=1)
    store.write([record(1, created_at=time.time() - 2 * 86400), record(2)])
    r.delete(rediskeys.CHECK.format(id="c0001"))  # what the key TTL does after a day
    assert store.trim() == 1
    assert [x.id for x in store.queue(limit=10)[0]] == ["c0002"]
    assert store.queue_size(site="https://s.example.com", verdict="unsure") == 1


def test_trim_catches_up_in_one_go_without_scanning_the_keyspace_and_one_process_at_a_time(r, monkeypatch):
    """A trim used to SCAN every key to find the queue indexes (seconds of Redis CPU on a big deployment, once a
    minute from every web process) and to take 1,000 ids a minute at most."""
    store = CheckStore(r, retention_days=1)
    old = time.time() - 2 * 86400
    other = dict(site="https://t.example.com", verdict="spam", answered="spam")
    store.write([record(i, created_at=old) for i in range(1500)] + [record(2000 + i, created_at=old, **other)
                                                                   for i in range(1000)] + [record(9999)])
    for i in list(range(1500)) + [2000 + i for i in range(1000)]:
        r.delete(rediskeys.CHECK.format(id=f"c{i:04d}"))  # what the key TTL does after a day
    r.set(rediskeys.QUEUE_TRIM, "another process", ex=60)
    assert store.trim(batch=1000) == 0  # another process is trimming
    r.delete(rediskeys.QUEUE_TRIM)
    scans = []
    monkeypatch.setattr(r, "scan_iter", lambda *a, **k: scans.append(k) or iter(()))
    r.set(rediskeys.QUEUE_INDEXED, "1")
    assert store.trim(batch=1000) == 2500 and not scans
    assert [x.id for x in store.queue(limit=10)[0]] == ["c9999"]
    assert store.queue_size() == 1 and store.queue_size(site="https://t.example.com", verdict="spam") == 0
    assert not r.exists(rediskeys.QUEUE_TRIM)  # released for the next one


def test_queue_indexes_written_before_their_set_are_found_once(r):
    store = CheckStore(r, retention_days=1)
    store.write([record(1, created_at=time.time() - 2 * 86400), record(2)])
    r.delete(rediskeys.QUEUE_INDEXES, rediskeys.CHECK.format(id="c0001"))  # as an older deployment left them
    assert store.trim() == 1
    assert store.queue_size(site="https://s.example.com", verdict="unsure") == 1
    assert r.exists(rediskeys.QUEUE_INDEXED) and r.scard(rediskeys.QUEUE_INDEXES) == 4


def test_a_check_requeued_by_an_undo_names_its_queue_indexes_for_the_trim(r):
    """An undo puts a check back into queue indexes that may have been deleted (emptied) since the trim learnt
    their names: it names them again, or the trim would leave the id there for good once the check expired."""
    from training import labels as label_store
    from training.labels import LabelStore

    store = CheckStore(r, retention_days=1)
    check = record(1, created_at=time.time() - 2 * 86400, site="https://u.example.com", verdict="spam",
                   answered="spam")
    store.write([check])
    labels = LabelStore(r)
    labels.put(label_store.for_check(check, "spam", by="mo"))  # the queue indexes empty, so Redis deletes them
    r.delete(rediskeys.QUEUE_INDEXES)
    r.set(rediskeys.QUEUE_INDEXED, "1")
    assert labels.remove(check.id, by="mo") is not None  # back in the queue
    assert r.sismember(rediskeys.QUEUE_INDEXES, rediskeys.QUEUE.format(verdict="spam", site="https://u.example.com"))
    r.delete(rediskeys.CHECK.format(id=check.id))  # expires
    assert store.trim() == 1
    assert store.queue_size(site="https://u.example.com") == 0 and store.queue_size() == 0


def test_a_queue_read_drops_expired_ids_for_a_bounded_time_then_answers_a_short_page(r, monkeypatch):
    from training import checks

    store = CheckStore(r)
    store.write([record(i, score=0.5) for i in range(30)] + [record(100 + i, score=0.9) for i in range(3)])
    for i in range(30):
        r.delete(rediskeys.CHECK.format(id=f"c{i:04d}"))  # expired, not trimmed yet
    monkeypatch.setattr(checks, "QUEUE_READ_SECONDS", 0.0)
    items, cursor = store.queue(limit=5)
    assert items == [] and cursor is not None  # one round of dropping, then a short page with where to go on
    seen = []
    while cursor is not None:
        items, cursor = store.queue(limit=5, cursor=cursor)
        seen += [x.id for x in items]
    assert seen == ["c0100", "c0101", "c0102"]
    assert store.queue_size() == 3  # everything expired was dropped on the way


def test_queue_skips_ids_whose_check_expired(r):
    store = CheckStore(r)
    store.write([record(i) for i in range(4)])
    r.delete(rediskeys.CHECK.format(id="c0001"))
    assert [x.id for x in store.queue(limit=2)[0]] == ["c0000", "c0002"]
    assert store.queue_size() == 3


def test_site_policy_validates_as_a_whole_and_falls_back_when_redis_is_down(r):
    base = defaults(Settings())
    assert base.verdict(0.95) == "spam" and base.verdict(0.6) == "unsure" and base.verdict(0.1) == "ham"
    with pytest.raises(ValidationError) as exc:
        merge(base, {"discard_threshold": 0.5})
    assert exc.value.field == "discard_threshold"
    with pytest.raises(ValidationError) as exc:
        merge(base, {"trusted_roles": "x" * 65})
    assert exc.value.field == "trusted_roles"
    with pytest.raises(ValidationError):
        merge(base, {"colour": 1})
    assert base.unsure_as_spam is None and merge(base, {"unsure_as_spam": False}).unsure_as_spam is False
    with pytest.raises(ValidationError) as exc:
        merge(base, {"unsure_as_spam": "no"})
    assert exc.value.field == "unsure_as_spam"
    sites = SiteStore(r, Settings(), cache_seconds=0)
    sites.update("https://s.example.com", {"shadow": True, "trusted_roles": ["Editor"]})
    policy = sites.policy("https://s.example.com")
    assert policy.shadow and policy.trusted_roles == {"editor"}
    # A process that never read the site's settings does not guess them: the defaults could answer "spam" to a
    # site in shadow mode.
    down = SiteStore(redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0)), Settings())
    with pytest.raises(redis.ConnectionError):
        down.policy("https://s.example.com")


@pytest.fixture(autouse=True)
def _stop_directories(monkeypatch):
    """Directory threads started by a test's lookups stop with it."""
    from training import directory as directory_module

    started = []
    real_init = directory_module.Directory.__init__

    def tracking_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(directory_module.Directory, "__init__", tracking_init)
    yield
    for directory in started:
        directory.stop()


def dead_redis() -> redis.Redis:
    return redis.Redis(port=free_port(), socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0))


def test_every_key_and_site_setting_read_before_an_outage_keeps_working_in_every_process(r):
    """A process that has read the directory answers for keys and sites it has never been asked about, without
    Redis; a key or site newer than its last read still goes to Redis."""
    from training.apikeys import KeyStore
    from training.directory import Directory

    KeyStore(r).create("https://other.example.com", "site")
    plain, record = KeyStore(r).create("https://s.example.com", "site", "blog")
    SiteStore(r, Settings()).update("https://s.example.com", {"shadow": True})
    keys, sites = KeyStore(r), SiteStore(r, Settings())
    directory = Directory(r, keys, sites)
    assert directory.refresh() and not directory.refresh()  # read once; nothing changed since

    keys.redis = sites.redis = dead_redis()  # Redis gone (or hung: nothing below may ask it)
    assert keys.authenticate(plain) == record and keys.get(record.id) == record
    assert sites.policy("https://s.example.com").shadow
    assert sites.policy("https://never-configured.example.com") == sites.base  # no settings of its own
    with pytest.raises(redis.ConnectionError):
        keys.authenticate("made-up-key!")  # unknown here: only Redis could say


def test_a_change_reaches_a_process_at_its_next_read(r):
    from training.apikeys import KeyStore
    from training.directory import Directory

    plain, record = KeyStore(r).create("https://s.example.com", "site")
    keys, sites = KeyStore(r, cache_seconds=0), SiteStore(r, Settings())
    directory = Directory(r, keys, sites)
    directory.refresh()
    assert keys.authenticate(plain) == record

    elsewhere = KeyStore(r)  # another process revokes the key and changes the site's settings
    assert elsewhere.revoke(record.id)
    SiteStore(r, Settings()).update("https://s.example.com", {"spam_threshold": 0.8})
    assert directory.refresh()
    assert keys.authenticate(plain) is None and keys.get(record.id) is None
    assert sites.policy("https://s.example.com").spam_threshold == 0.8
    SiteStore(r, Settings()).update("https://s.example.com", {"spam_threshold": None})
    directory.refresh()
    assert sites.policy("https://s.example.com") == sites.base
    fresh, new_record = KeyStore(r).create("https://new.example.com", "site")
    assert keys.authenticate(fresh) == new_record  # newer than the last read: looked up in Redis


def test_site_settings_the_index_does_not_name_are_found(r, monkeypatch):
    from training import rediskeys
    from training.apikeys import KeyStore
    from training.directory import Directory

    r.hset(rediskeys.SITE.format(site="https://old.example.com"), "shadow", "true")  # before the index existed
    sites = SiteStore(r, Settings())
    directory = Directory(r, KeyStore(r), sites)
    # The first read happens whatever the clock says (a machine up for less than a minute once skipped it).
    monkeypatch.setattr("training.directory.time.monotonic", lambda: 30.0)
    assert directory.refresh()
    assert sites.policy("https://old.example.com").shadow and r.exists(rediskeys.SITES_INDEXED)

    # Written later without the index (by hand, or by an older Winnow during an upgrade): the check that asks
    # gets the defaults, the next poll finds the settings, and every process reads them again.
    r.hset(rediskeys.SITE.format(site="https://b.example.com"), "shadow", "true")
    assert not sites.policy("https://b.example.com").shadow
    assert directory.refresh()
    assert sites.policy("https://b.example.com").shadow
    assert r.sismember(rediskeys.SITES_INDEX, "https://b.example.com")
    assert sites.policy("https://plain.example.com") == sites.base  # no settings: looked up once, then left be
    assert directory.refresh() is False and directory.refresh() is False


def test_a_revoked_key_is_refused_whichever_way_a_process_first_saw_it(r):
    from training.apikeys import KeyStore
    from training.directory import Directory

    keys, sites = KeyStore(r), SiteStore(r, Settings())
    directory = Directory(r, keys, sites)
    directory.refresh()
    plain, record = KeyStore(r).create("https://s.example.com", "site")  # newer than this process's read
    assert keys.authenticate(plain) == record  # looked up in Redis and kept for a few seconds
    KeyStore(r).revoke(record.id)
    directory.refresh()
    live = keys.redis
    keys.redis = dead_redis()
    with pytest.raises(redis.ConnectionError):
        keys.authenticate(plain)  # never answered from the lookup made before the revocation
    keys.redis = live
    assert keys.authenticate(plain) is None


def test_one_unreadable_key_record_leaves_the_others_working_and_updating(r):
    from training import rediskeys
    from training.apikeys import KeyStore
    from training.directory import Directory

    plain, record = KeyStore(r).create("https://s.example.com", "site")
    r.sadd(rediskeys.KEYS_INDEX, "f" * 64)
    r.hset(rediskeys.KEY.format(digest="f" * 64), "role", "site")  # no id: edited by hand
    keys = KeyStore(r)
    directory = Directory(r, keys, SiteStore(r, Settings()))
    directory.refresh()
    assert keys.authenticate(plain) == record
    KeyStore(r).revoke(record.id)
    assert directory.refresh() and keys.authenticate(plain) is None


def test_checks_are_stored_when_redis_has_forgotten_the_script(r):
    store = CheckStore(r)
    store.write([record(300)])
    r.script_flush()
    assert store.write([record(301), record(302)]) == 2
    assert store.get("c0301") == record(301, created_at=store.get("c0301").created_at)
    assert store.get("c0302") is not None and store.queue_size() == 3


@pytest.mark.parametrize("given", ["https://Blog.Example.com/", "blog.example.com", "HTTPS://blog.example.com:443",
                                   "https://user@blog.example.com"])
def test_a_site_has_one_canonical_name(given):
    from training.apikeys import normalise_site

    assert normalise_site(given) == "https://blog.example.com"


def test_site_names_cannot_pass_for_another_sites_fields(r):
    from training import activity
    from training.apikeys import normalise_site

    for bad in ("https://a.example.com|other-tenant", "https://a.exa mple.com", "ftp://a.example.com", "https://",
                "https://a.example.com:abc", "https://<a>.example.com", "http://[fe80::1%25a|b]/"):
        with pytest.raises(ValidationError):
            normalise_site(bad)
    for name in ("https://bücher.example", "https://उदाहरण.परीक्षा", "https://தமிழ்.example", "http://[::1]:8080/blog",
                 "https://a_b.example.com", "https://a.example.com/p|q"):  # host names in any script; paths as sent
        assert normalise_site(name) == name
    # "|" separates the fields of the activity counters: a site whose path holds one cannot read as another's
    now = time.time()
    with r.pipeline(transaction=False) as pipe:
        activity.count_label(pipe, site="https://a.example.com/p|q", label="spam", moderator="Eve", at=now)
        activity.count_label(pipe, site="https://a.example.com/p", label="ham", moderator="Ann", at=now)
        pipe.execute()
    assert activity.daily(r, days=1, site="https://a.example.com/p", now=now)["moderators"] == {"Ann": 1}
    assert activity.daily(r, days=1, site="https://a.example.com/p|q", now=now)["moderators"] == {"Eve": 1}
    assert activity.daily(r, days=1, site="https://a.example.com/p%7Cq", now=now)["moderators"] == {}
    with pytest.raises(ValidationError, match="lone surrogate"):
        normalise_site("https://a.example.com/\udcff")  # a command-line byte that was no UTF-8


def test_a_queue_read_while_a_fresh_redis_loads_the_write_script_loses_no_check(r):
    """After a Redis restart (scripts gone), a batch's queue entries land before its hashes do; a queue read in
    between took them for expired checks and dropped them from the queue for good."""
    store = CheckStore(r)
    r.script_flush()
    real_put = store._put

    class PutAfterAReader:
        sha = real_put.sha

        def __call__(self, *args, **kwargs):
            store.queue(limit=10)  # a moderator's page load, right between the two
            return real_put(*args, **kwargs)

    store._put = PutAfterAReader()
    store.write([record(1), record(2, score=0.7)])
    items, _ = store.queue(limit=10)
    assert sorted(x.id for x in items) == ["c0001", "c0002"]


def test_settings_another_process_just_wrote_are_no_index_warning(r, caplog):
    """A process whose copy of the settings is a moment old sees a check for a site just configured elsewhere:
    that site is in the index, so it reads again without warning that the index missed it."""
    from training.apikeys import KeyStore
    from training.directory import Directory

    sites = SiteStore(r, Settings())
    directory = Directory(r, KeyStore(r), sites)
    # No background reader: it could read again between the two steps below and take the test's own refresh.
    directory.ensure_running = lambda: None
    directory.refresh()
    SiteStore(r, Settings()).update("https://new.example.com", {"shadow": True})  # another process, via the API
    assert not sites.policy("https://new.example.com").shadow  # this copy is older than the change
    with caplog.at_level("WARNING", logger="winnow"):
        assert directory.refresh()
    assert sites.policy("https://new.example.com").shadow
    assert "missing from the site index" not in caplog.text


def test_activity_names_every_site_it_counted_even_with_a_bar_in_its_path(r):
    from training import activity

    pipe = r.pipeline()
    activity.count_check(pipe, site="https://a.example.com/x|y", verdict="ham", created_at=time.time())
    activity.count_label(pipe, site="https://b.example.com", label="spam", moderator="mo", at=time.time() - 86400 * 3)
    activity.count_check(pipe, site="https://old.example.com", verdict="ham", created_at=time.time() - 86400 * 390)
    pipe.execute()
    assert activity.sites_seen(r) == {"https://a.example.com/x|y", "https://b.example.com"}
    assert activity.sites_seen(r, days=400) >= {"https://old.example.com"}
