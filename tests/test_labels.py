"""Reading labels for training: the index, bulk reads through the fetch script, and reads in another process."""
from __future__ import annotations

import dataclasses
import pickle

import numpy as np

from training import labels
from training.labels import LabelBatch, LabelStore, connection_spec
from training.schema import Comment

SITE = "https://blog.example.org"
OTHER = "https://other.example.org"


def put(store, rows, start_at=1_700_000_000.0):
    records = []
    for i, (site, text, label) in enumerate(rows):
        rec = labels.for_comment(site, Comment(content=text, author=f"a{i}"), label, by="moderator:test")
        records.append(dataclasses.replace(rec, labelled_at=start_at + i))
    return store.put_many(records, keep_times=True)


def test_training_index_is_oldest_first_with_labels_counts_and_the_newest_time(redis_client):
    store = LabelStore(redis_client)
    rows = [(SITE if i % 3 else OTHER, f"comment {i}", "spam" if i % 2 else "ham") for i in range(12)]
    records = put(store, rows)
    index = store.training_index()
    assert index.ids == [r.id for r in records]
    assert index.y.tolist() == [i % 2 for i in range(12)] and index.y.dtype == np.int8
    assert index.last_time == 1_700_000_011.0 and index.newer == 12
    assert store.training_index(newer_than=1_700_000_009.0).newer == 2  # strictly newer
    assert store.training_index(newer_than=1_700_000_011.0).newer == 0
    mine = store.training_index(SITE)
    assert mine.ids == [r.id for r, (site, _, _) in zip(records, rows) if site == SITE]
    # a relabel moves the label to the end (its time is the relabel's) and changes its class
    store.put(dataclasses.replace(records[0], label="spam", labelled_at=1_700_000_100.0), keep_times=True)
    index = store.training_index()
    assert index.ids[-1] == records[0].id and index.y[-1] == 1 and index.last_time == 1_700_000_100.0
    empty = LabelStore(redis_client).training_index("https://nobody.example")
    assert empty.ids == [] and empty.last_time is None and empty.newer == 0


def test_bulk_reads_skip_labels_removed_since_the_index_was_read(redis_client, monkeypatch):
    monkeypatch.setattr(labels, "FETCH_CHUNK", 4)  # several script calls
    store = LabelStore(redis_client)
    records = put(store, [(SITE, f"text {i}", "spam" if i % 2 else "ham") for i in range(10)])
    index = store.training_index()
    store.remove(records[3].id, by="moderator:test")
    comments, y, found = store.training_examples(index.ids)
    assert found.tolist() == [i != 3 for i in range(10)]
    assert [c.content for c in comments] == [f"text {i}" for i in range(10) if i != 3]
    assert y.tolist() == [i % 2 for i in range(10) if i != 3]
    assert comments[0] == records[0].comment  # every field, as stored
    examples = list(store.iter_examples(SITE))
    assert [(c.content, label, t, site, i) for c, label, t, site, i in examples] == [
        (r.comment.content, r.label, r.labelled_at, SITE, r.id) for k, r in enumerate(records) if k != 3]
    assert store.fetch([records[0].id, "no-such-label"], ("label", "site")) == [[b"ham", SITE.encode()],
                                                                                [None, None]]


def test_a_label_batch_reads_through_its_own_connection(redis_client):
    store = LabelStore(redis_client)
    records = put(store, [(SITE, "spam text", "spam"), (OTHER, "ham text", "ham")])
    batch = LabelBatch(connection_spec(redis_client), (records[1].id, records[0].id))
    copy = pickle.loads(pickle.dumps(batch))  # what a feature worker receives
    comments, y, w, sources = copy.load()
    assert [c.content for c in comments] == ["ham text", "spam text"]
    assert y.tolist() == [0, 1] and w.tolist() == [1.0, 1.0] and sources == [OTHER, SITE]
    assert labels._worker_client(copy.connection) is not redis_client
    assert labels._worker_client(copy.connection).connection_pool.connection_kwargs["db"] == \
        redis_client.connection_pool.connection_kwargs["db"]


def test_labels_are_stamped_by_redis_in_the_order_they_land(redis_client):
    """A web process whose clock runs behind still gives its label a time after every label already stored, so
    a retrain that read the labels up to some time never leaves a later label out of the next quick update."""
    store = LabelStore(redis_client)
    seconds, micros = redis_client.time()
    redis_now = seconds + micros / 1e6
    first = store.put(labels.for_comment(SITE, Comment(content="first"), "spam", by="moderator:test"))
    skewed = dataclasses.replace(labels.for_comment(SITE, Comment(content="second"), "ham", by="moderator:test"),
                                 labelled_at=redis_now - 3600)  # written by a process an hour behind
    second = store.put(skewed)
    assert redis_now <= first.labelled_at <= second.labelled_at < redis_now + 60
    assert store.get(second.id).labelled_at == second.labelled_at
    assert store.training_index(newer_than=first.labelled_at).newer == 1
    assert [entry["at"] for entry in store.audit(second.id)] == [second.labelled_at]

    relabelled = store.put(dataclasses.replace(skewed, label="spam"))
    assert relabelled.previous == "ham" and relabelled.labelled_at >= second.labelled_at
    assert store.put(dataclasses.replace(skewed, label="spam")).labelled_at == relabelled.labelled_at  # unchanged
    removed = store.remove(second.id, by="moderator:test")
    assert removed is not None
    trail = store.audit(second.id)
    assert [e["to"] for e in trail] == ["ham", "spam", None] and trail[-1]["at"] >= relabelled.labelled_at
