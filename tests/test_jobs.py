"""The retrain job on a real Redis with rq's SimpleWorker: the gate, single flight, follow-ups, triggers, recovery."""
from __future__ import annotations

import dataclasses
import json
import datetime as dt
import threading
import time

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.cron import CronScheduler
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from bench.loop_data import campaign
from tests.conftest import TEST_REDIS_URL
from training import jobs, labels
from training import rediskeys as keys
from training.labels import LabelStore
from training.model import train
from training.registry import Registry
from training.schema import Comment
from training.schedule import periodic_jobs
from training.settings import Settings

LOOP_REDIS_URL = TEST_REDIS_URL.rsplit("/", 1)[0] + "/11"
SECRET = "jobs-test-secret"
SITE = "https://blog.example.org"


@pytest.fixture()
def r():
    client = redis.Redis.from_url(LOOP_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture()
def settings(tmp_path, monkeypatch):
    env = {"WINNOW_REDIS_URL": LOOP_REDIS_URL, "WINNOW_SECRET_KEY": SECRET, "WINNOW_DATA_DIR": str(tmp_path),
           "WINNOW_MODELS_DIR": str(tmp_path / "models"), "WINNOW_RETRAIN_LOCK_SECONDS": "3",
           "WINNOW_RETRAIN_AFTER_LABELS": "50", "WINNOW_RETRAIN_AFTER_OVERTURNS": "5",
           "WINNOW_UPDATE_ABOVE_LABELS": "0"}  # quick updates at test sizes; see the test of the setting
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return Settings.from_env()


@pytest.fixture(scope="module")
def backwards_model():
    """A champion that learned the campaign upside down: any honest challenger beats it."""
    rows = list(campaign(60, seed=5))
    return train([c for c, _ in rows], ["ham" if label == "spam" else "spam" for _, label in rows])


@pytest.fixture(scope="module")
def good_model():
    rows = list(campaign(400, seed=6))
    return train([c for c, _ in rows], [label for _, label in rows])


def seed_champion(r, settings, model, **meta) -> str:
    return Registry.from_settings(r, settings).publish(model, {"kind": "test", **meta}, promoted_by="test",
                                                       reason="champion for the test", promote=True)


def store_labels(r, rows, start_at: float = 1_700_000_000.0, flip_older_than: int | None = None):
    """Store labels one second apart (oldest first); the first `flip_older_than` get the wrong label."""
    records = []
    for i, (comment, label) in enumerate(rows):
        if flip_older_than is not None and i < flip_older_than:
            label = "ham" if label == "spam" else "spam"
        rec = labels.for_comment(SITE, comment, label, by="moderator:test")
        records.append(dataclasses.replace(rec, labelled_at=start_at + i))
    return LabelStore(r).put_many(records, keep_times=True)


def run_burst(r, settings):
    SimpleWorker([Queue(settings.queue_name, connection=r)], connection=r).work(burst=True)


def test_gate_promotes_a_better_challenger_and_records_the_run(r, settings, backwards_model):
    champion = seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(300, seed=7))
    job_id = jobs.enqueue_retrain(r, settings, reason="test", by="admin:tester")
    run_burst(r, settings)

    status = jobs.job_status(r, job_id)
    assert status["status"] == "finished" and status["progress"] == 1.0
    result = status["result"]
    assert result["decision"] == "promote", result["why"]
    registry = Registry.from_settings(r, settings)
    new = registry.current_version()
    assert new != champion and result["challenger_version"] == new
    info = registry.get(new)
    assert info["kind"] == "retrain" and info["counts"]["labels"] == 300
    assert info["trained_until"] == pytest.approx(1_700_000_000.0 + 299)
    assert "holdout of the newest 60 labels" in info["evaluation"]
    m = info["metrics"]
    assert m["challenger"]["mcc"] > m["champion"]["mcc"]
    assert m["challenger"]["ham_flagged"] <= m["champion"]["ham_flagged"]
    run = jobs.recent_runs(r)[0]
    assert run["decision"] == "promote" and run["job_id"] == job_id and run["duration_s"] > 0
    assert run["counts"]["eval"] == 60 and run["requested_by"] == "admin:tester"
    assert r.get(keys.RETRAIN_ACTIVE) is None

    # The new model learned the campaign.
    spam, _ = next(campaign(2, seed=123, start=1))
    assert registry.load(new).score(spam).score > registry.load(champion).score(spam).score


def test_gate_refuses_a_worse_challenger_and_says_why(r, settings, good_model):
    champion = seed_champion(r, settings, good_model)
    # A moderator mislabelled most of the history: the challenger learns it, the champion is right.
    store_labels(r, campaign(300, seed=8), flip_older_than=240)
    job_id = jobs.enqueue_retrain(r, settings, reason="test")
    run_burst(r, settings)
    result = jobs.job_status(r, job_id)["result"]
    assert result["decision"] == "reject"
    assert "below champion MCC" in result["why"] or "ham comments as spam" in result["why"]
    registry = Registry.from_settings(r, settings)
    assert registry.current_version() == champion
    event = registry.history()[0]
    assert event["kind"] == "reject" and event["reason"] == result["why"] and "metrics" in event
    assert [m["version"] for m in registry.list()] == [champion]


def _judged(tp=0, fn=0, tn=0, fp=0, mcc=0.0) -> dict:
    return {"mcc": mcc, "ham_flagged": fp, "spam_flagged": tp, "spam_threshold": 0.7,
            "confusion": {"tp": tp, "fn": fn, "tn": tn, "fp": fp, "threshold": 0.7}}


def test_gate_on_a_spam_wave_alone_compares_what_each_model_catches():
    # The newest labels are a spam wave: MCC is 0 for any model, so it cannot tell the two apart.
    ok, why = jobs.gate(_judged(tp=3, fn=17), _judged(tp=15, fn=5), tolerance=0.01)
    assert not ok and "all spam" in why and "catches 3 of 20" in why and "champion 15" in why
    assert jobs.gate(_judged(tp=15, fn=5), _judged(tp=15, fn=5), tolerance=0.01)[0]
    ok, why = jobs.gate(_judged(tp=19, fn=1), _judged(tp=15, fn=5), tolerance=0.01)
    assert ok and "catches 19 of 20" in why and "champion 15" in why  # a promotion says what it was judged on
    # On ham alone, flagging more of it was already refused; with both classes, MCC decides as before.
    assert not jobs.gate(_judged(tn=18, fp=2), _judged(tn=20), tolerance=0.01)[0]
    ok, why = jobs.gate(_judged(tn=20), _judged(tn=19, fp=1), tolerance=0.01)
    assert ok and "all ham" in why and "flags 0 of 20" in why and "champion 1" in why
    assert jobs.gate(_judged(tp=8, fn=2, tn=10, mcc=0.82), _judged(tp=9, fn=1, tn=10, mcc=0.82), tolerance=0.01)[0]


def test_few_labels_use_cross_validation(r, settings, backwards_model):
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(80, seed=9))
    job_id = jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)
    result = jobs.job_status(r, job_id)["result"]
    assert "cross-validation over 80 labels" in result["evaluation"]
    assert result["counts"]["eval"] == 80 and result["decision"] == "promote"


def test_cross_validation_says_it_judged_only_the_labels_the_champion_never_saw(r, settings, backwards_model):
    seed_champion(r, settings, backwards_model, trained_until=1_700_000_000.0 + 49.5)  # saw the 50 oldest
    store_labels(r, campaign(80, seed=9))
    job_id = jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)
    result = jobs.job_status(r, job_id)["result"]
    assert result["counts"]["eval"] == 30
    assert result["evaluation"].endswith("cross-validation over 80 labels, judged on the newest 30 (those the "
                                         "champion has not seen)")


def test_nothing_new_since_the_champion_is_a_skip(r, settings, backwards_model):
    seed_champion(r, settings, backwards_model, trained_until=1_800_000_000.0)
    store_labels(r, campaign(40, seed=10))
    job_id = jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)
    result = jobs.job_status(r, job_id)["result"]
    assert result["decision"] == "skip" and "newer than champion" in result["why"]


def test_a_skipped_run_leaves_its_unseen_labels_counted_for_the_next(r, settings, backwards_model):
    # Nine labels too few to judge on are still to be learned: the next automatic retrain must come after 41 more
    # labels, not 50.
    rows = store_labels(r, campaign(40, seed=16))
    seed_champion(r, settings, backwards_model, trained_until=rows[-10].labelled_at)
    r.set(keys.RETRAIN_NEW_LABELS, 9)
    job_id = jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)
    result = jobs.job_status(r, job_id)["result"]
    assert result["decision"] == "skip" and "only 9 labels newer" in result["why"]
    assert int(r.get(keys.RETRAIN_NEW_LABELS)) == 9


def test_single_flight_and_exactly_one_follow_up(r, settings, backwards_model, monkeypatch):
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=11))
    release = threading.Event()
    running = []
    overlap = []
    real_train = jobs._train

    def slow_train(*args, **kwargs):
        running.append(1)
        if len(running) > 1 and r.exists(keys.RETRAIN_LOCK) == 0:
            overlap.append("trained without the lock")
        release.wait(20)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "_train", slow_train)
    first = jobs.enqueue_retrain(r, settings, reason="first")
    assert jobs.enqueue_retrain(r, settings, reason="again while queued") == first
    asked = []

    def ask_while_running():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if Job.fetch(first, connection=r).get_status() == JobStatus.STARTED and r.exists(keys.RETRAIN_LOCK):
                break
            time.sleep(0.02)
        asked.extend(jobs.enqueue_retrain(r, settings, reason=f"ask {i}") for i in range(5))
        asked.append(jobs.job_status(r, asked[0])["status"])
        release.set()

    helper = threading.Thread(target=ask_while_running)
    helper.start()
    run_burst(r, settings)
    helper.join()

    follow_up = asked[0]
    assert follow_up != first and set(asked[:5]) == {follow_up} and asked[5] == "pending"
    assert jobs.job_status(r, first)["result"]["follow_up"] == follow_up
    assert jobs.job_status(r, follow_up)["status"] == "finished"
    runs = jobs.recent_runs(r)
    assert [run["job_id"] for run in runs] == [follow_up, first]
    assert runs[0]["reason"] == "follow-up: ask 0"
    assert not overlap and Queue(settings.queue_name, connection=r).count == 0
    assert r.get(keys.RETRAIN_ACTIVE) is None and r.get(keys.RETRAIN_PENDING) is None


def test_a_run_in_a_shell_is_the_flight_and_starts_the_follow_up_asked_meanwhile(r, settings, backwards_model,
                                                                                monkeypatch):
    """`winnow retrain --now`: an ask while it runs books the follow-up (no job waiting for the lock, using up
    its retries) and the follow-up runs once the shell's run ends."""
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=12))
    release = threading.Event()
    real_train = jobs._train

    def slow_train(*args, **kwargs):
        release.wait(20)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "_train", slow_train)
    records = []
    shell = threading.Thread(target=lambda: records.append(jobs.run_here(r, settings, reason="shell", full=True)))
    shell.start()
    deadline = time.monotonic() + 20
    while not (r.exists(keys.RETRAIN_LOCK) and jobs._text(r.get(keys.RETRAIN_ACTIVE) or b"").startswith("here-")):
        assert time.monotonic() < deadline, "the shell's run never took the flight"
        time.sleep(0.02)
    here = jobs._text(r.get(keys.RETRAIN_ACTIVE))

    asked = jobs.enqueue_retrain(r, settings, reason="labels meanwhile")
    assert jobs.job_status(r, asked)["status"] == "pending" and here in jobs.job_status(r, asked)["stage"]
    assert jobs.job_status(r, here)["status"] == "started"  # the run it waits for can be looked up too
    assert jobs.job_status(r, "here-999999") is None
    assert Queue(settings.queue_name, connection=r).count == 0
    with pytest.raises(jobs.RetrainBusy, match=here):
        jobs.run_here(r, settings)  # a second shell is refused at once
    release.set()
    shell.join(30)
    assert records and records[0]["job_id"] == here and records[0]["decision"] == "promote"
    ended = jobs.job_status(r, here)
    assert ended["status"] == "finished" and ended["result"]["decision"] == "promote" and ended["ended_at"]
    assert jobs._text(r.get(keys.RETRAIN_ACTIVE)) == asked and Queue(settings.queue_name, connection=r).count == 1

    store_labels(r, campaign(30, seed=13), start_at=1_800_000_000.0)
    run_burst(r, settings)
    status = jobs.job_status(r, asked)
    assert status["status"] == "finished" and status["result"]["reason"] == "follow-up: labels meanwhile"
    assert r.get(keys.RETRAIN_ACTIVE) is None and r.get(keys.RETRAIN_PENDING) is None


def test_a_shell_run_that_fails_is_shown_failed_not_unknown(r, settings, backwards_model, monkeypatch):
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=15))

    def failing_train(*args, **kwargs):
        raise MemoryError("out of memory while fitting")

    monkeypatch.setattr(jobs, "_train", failing_train)
    with pytest.raises(MemoryError):
        jobs.run_here(r, settings, reason="shell", full=True)
    here = jobs.recent_runs(r, 1)[0]["job_id"]
    status = jobs.job_status(r, here)
    assert here.startswith("here-") and status["status"] == "failed"
    assert "out of memory while fitting" in status["error"] and status["ended_at"] and status["reason"] == "shell"
    assert r.get(keys.RETRAIN_ACTIVE) is None  # the flight ended with it


def test_a_shell_run_refuses_while_a_worker_will_run_the_queued_job_else_takes_it_over(r, settings,
                                                                                   backwards_model):
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=14))
    queued = jobs.enqueue_retrain(r, settings, reason="queued", full=True)
    worker = SimpleWorker([Queue(settings.queue_name, connection=r)], connection=r)
    worker.register_birth()  # a worker is up: it will run the queued retrain
    with pytest.raises(jobs.RetrainBusy, match=queued):
        jobs.run_here(r, settings)
    worker.register_death()
    r.delete(worker.key)
    r.srem("rq:workers", worker.key)
    r.srem(f"rq:workers:{settings.queue_name}", worker.key)
    record = jobs.run_here(r, settings, reason="shell")  # no worker would ever run it: taken over
    assert record["decision"] == "promote" and record["full_requested"] is True
    assert record["reason"] == f"shell (took over {queued}, which no worker was up to run)"
    assert jobs.job_status(r, queued)["status"] == "canceled"
    assert r.get(keys.RETRAIN_ACTIVE) is None and Queue(settings.queue_name, connection=r).count == 0


def test_a_dead_shell_run_blocks_nothing(r, settings, backwards_model):
    seed_champion(r, settings, backwards_model)

    # A shell killed mid-run leaves its id behind; its lease is gone, so the flight is over.
    r.set(keys.RETRAIN_ACTIVE, "here-99")
    r.set(keys.RETRAIN_PENDING, json.dumps({"job_id": "retrain-98", "reason": "asked meanwhile", "full": False}))
    assert jobs.recover_retrain() == "retrain-98"
    assert Queue(settings.queue_name, connection=r).count == 1


def test_a_full_refit_asked_for_is_never_folded_into_a_quick_one(r, settings, backwards_model):
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=21))
    quick = jobs.enqueue_retrain(r, settings, reason="50 new labels")
    assert jobs.enqueue_retrain(r, settings, reason="again") == quick  # joins the queued run, as before
    # The nightly full refit, asked for while that quick run waits: booked as the follow-up, not lost in it.
    nightly = jobs.enqueue_retrain(r, settings, reason="schedule", by="clock", full=True)
    assert nightly != quick and json.loads(r.get(keys.RETRAIN_PENDING))["full"] is True
    assert jobs.enqueue_retrain(r, settings, reason="more labels") == quick  # it reads them anyway
    assert jobs.enqueue_retrain(r, settings, reason="by hand", full=True) == nightly
    run_burst(r, settings)
    runs = {run["job_id"]: run for run in jobs.recent_runs(r)}
    assert runs[quick]["full_requested"] is False and runs[nightly]["full_requested"] is True
    # Any ask joins a queued full refit; a full ask when a quick follow-up is booked makes that one full.
    full = jobs.enqueue_retrain(r, settings, reason="by hand", full=True)
    assert jobs.enqueue_retrain(r, settings, reason="labels") == full
    assert jobs.enqueue_retrain(r, settings, reason="schedule", full=True) == full
    assert r.get(keys.RETRAIN_PENDING) is None
    run_burst(r, settings)
    jobs.enqueue_retrain(r, settings, reason="labels")
    r.set(keys.RETRAIN_PENDING, json.dumps({"job_id": "retrain-999", "reason": "labels", "full": False}))
    assert jobs.enqueue_retrain(r, settings, reason="schedule", full=True) == "retrain-999"
    assert json.loads(r.get(keys.RETRAIN_PENDING))["full"] is True


def test_a_failed_run_is_retried_with_backoff(r, settings, backwards_model, monkeypatch):
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=12))

    def broken(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(jobs, "_train", broken)
    job_id = jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)
    job = Job.fetch(job_id, connection=r)
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == 2
    assert job.timeout == jobs.JOB_TIMEOUT and job.result_ttl == jobs.RESULT_TTL
    assert job.failure_ttl == jobs.FAILURE_TTL
    # Still in flight: asking again does not start a second one.
    assert jobs.enqueue_retrain(r, settings) == job_id
    assert not r.exists(keys.RETRAIN_LOCK)


def test_labels_and_overturns_trigger_a_retrain(r, settings):
    store = LabelStore(r)
    rows = list(campaign(120, seed=13))

    def label(batch):
        labels.after_labels(r, settings, store.put_many(
            [labels.for_comment(SITE, c, lab, by="moderator:test") for c, lab in batch]))

    label(rows[:49])
    assert Queue(settings.queue_name, connection=r).count == 0
    label(rows[49:50])
    queue = Queue(settings.queue_name, connection=r)
    assert queue.count == 1
    job_id = queue.job_ids[0]
    assert "50 new labels" in Job.fetch(job_id, connection=r).kwargs["reason"]
    label(rows[50:110])  # crosses 100 while the first is still queued: coalesced
    assert queue.job_ids == [job_id]

    r.delete(keys.RETRAIN_ACTIVE)
    queue.empty()
    r.set(keys.RETRAIN_NEW_LABELS, 0)
    assert jobs.maybe_trigger_retrain(r, settings, new_labels=1, overturns=4) is None
    second = jobs.maybe_trigger_retrain(r, settings, new_labels=1, overturns=1)
    assert second and "5 overturned verdicts" in Job.fetch(second, connection=r).kwargs["reason"]


def test_a_relabel_to_the_other_class_counts_as_an_overturn(r, settings):
    """Twenty noisy spam labels set right again are corrections of what the model learned: they must be able to
    trigger a retrain on their own, not wait for fifty more labels."""
    store = LabelStore(r)
    rows = list(campaign(6, seed=15))
    stored = store.put_many([labels.for_comment(SITE, c, "spam", by="moderator:test") for c, _ in rows])
    labels.after_labels(r, settings, stored)
    assert int(r.get(keys.RETRAIN_OVERTURNS) or 0) == 0  # new labels of comments never checked: no verdict
    fixed = store.put_many([labels.for_comment(SITE, c, "ham", by="moderator:test") for c, _ in rows])
    assert {x.previous for x in fixed} == {"spam"}
    labels.after_labels(r, settings, fixed)
    assert int(r.get(keys.RETRAIN_OVERTURNS)) == 6
    again = store.put_many([labels.for_comment(SITE, c, "ham", by="moderator:test") for c, _ in rows[:2]])
    labels.after_labels(r, settings, again)  # the same label again changes nothing
    assert int(r.get(keys.RETRAIN_OVERTURNS)) == 6


def test_retrain_resets_the_counters(r, settings, backwards_model):
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(30, seed=14))
    r.set(keys.RETRAIN_NEW_LABELS, 42)
    r.set(keys.RETRAIN_OVERTURNS, 3)
    jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)
    assert int(r.get(keys.RETRAIN_NEW_LABELS)) == 0 and int(r.get(keys.RETRAIN_OVERTURNS)) == 0


def test_a_run_abandoned_by_a_dead_worker_is_requeued_and_completes(r, settings, backwards_model):
    champion = seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=15))
    job_id = jobs.enqueue_retrain(r, settings)
    # What a SIGKILLed worker leaves behind: the job marked started, its execution in the started registry,
    # no lock (its lease ran out), and the serving pointer untouched.
    queue = Queue(settings.queue_name, connection=r)
    job = Job.fetch(job_id, connection=r)
    queue.remove(job)
    job.started_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=60)
    job.save()
    job.set_status(JobStatus.STARTED)
    started = StartedJobRegistry(queue=queue)
    r.zadd(started.key, {f"{job_id}:dead-execution": time.time() - 1})
    assert jobs.job_status(r, job_id)["status"] == "started"

    successor = jobs.recover_abandoned(r, settings)
    assert successor is not None and successor != job_id
    old = jobs.job_status(r, job_id)
    assert old["status"] == "failed" and f"continued as {successor}" in old["error"]
    assert old["continued_as"] == successor and jobs.job_status(r, successor)["continued_as"] is None
    new = Job.fetch(successor, connection=r)
    assert new.get_status() == JobStatus.QUEUED and new.meta["recoveries"] == 1 and new.meta["recovered_from"] == job_id
    assert new.kwargs == Job.fetch(job_id, connection=r).kwargs  # the same retrain, asked for the same way
    assert r.zcard(started.key) == 0 and queue.job_ids == [successor]
    assert jobs._text(r.get(keys.RETRAIN_ACTIVE)) == successor
    assert Registry.from_settings(r, settings).current_version() == champion
    run_burst(r, settings)
    assert jobs.job_status(r, successor)["result"]["decision"] == "promote"
    assert r.get(keys.RETRAIN_ACTIVE) is None


def test_a_live_run_is_not_mistaken_for_an_abandoned_one(r, settings):
    job_id = jobs.enqueue_retrain(r, settings)
    job = Job.fetch(job_id, connection=r)
    job.started_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=600)
    job.save()
    job.set_status(JobStatus.STARTED)
    r.set(keys.RETRAIN_LOCK, "held", px=5000)
    assert jobs.recover_abandoned(r, settings) is None
    r.delete(keys.RETRAIN_LOCK)
    job.started_at = dt.datetime.now(dt.timezone.utc)
    job.save()
    assert jobs.recover_abandoned(r, settings) is None  # too fresh: it may not have taken the lock yet


def test_a_run_that_ended_is_closed_not_run_again(r, settings):
    # Between a run's release of the lock and its closing of the flight, it looks like one a dead worker left.
    job_id = jobs.enqueue_retrain(r, settings)
    job = Job.fetch(job_id, connection=r)
    Queue(settings.queue_name, connection=r).remove(job)
    job.started_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=600)
    job.meta.update(stage="done: promote", progress=1.0)
    job.save()
    job.set_status(JobStatus.STARTED)
    r.set(keys.RETRAIN_PENDING, json.dumps({"job_id": "retrain-77", "reason": "asked meanwhile", "full": False}))
    assert jobs.recover_abandoned(r, settings) is None
    job = Job.fetch(job_id, connection=r)
    assert job.retries_left == 3 and "recoveries" not in job.meta  # not requeued, no retry spent
    assert jobs._text(r.get(keys.RETRAIN_ACTIVE)) == "retrain-77" and r.get(keys.RETRAIN_PENDING) is None
    assert Queue(settings.queue_name, connection=r).job_ids == ["retrain-77"]  # the follow-up it promised


def test_the_schedule_is_data_rq_cron_accepts(r, settings):
    specs = periodic_jobs(settings)
    assert {s["name"] for s in specs} == {"retrain-nightly", "retrain-recover"}
    clock = CronScheduler(connection=r)
    for spec in specs:
        clock.register(**spec)
    nightly = next(j for j in clock.get_jobs() if j.name == "retrain-nightly")
    assert nightly.cron == settings.retrain_cron and nightly.next_enqueue_time.astimezone().hour == 3
    recover = next(j for j in clock.get_jobs() if j.name == "retrain-recover")
    assert recover.should_run()
    for spec in specs:
        assert spec["job_timeout"] and spec["failure_ttl"] and spec["result_ttl"]
    # The clock's jobs go through the single-flight path: a scheduled ask joins the full retrain already queued.
    first = jobs.enqueue_retrain(r, settings, reason="by hand", full=True)
    assert jobs.scheduled_retrain() == first
    assert jobs.recover_retrain() is None
    assert Queue(settings.queue_name, connection=r).job_ids == [first]


def test_a_small_deployment_refits_on_every_label_rather_than_updating(r, settings, backwards_model):
    """Up to WINNOW_UPDATE_ABOVE_LABELS (150,000 by default) a refit takes under a minute and learns a new campaign
    from its few dozen labels better than an update: the same state as the test below refits, and says why. It fits
    with the serving model's own settings; the nightly refit chooses them again."""
    small = dataclasses.replace(settings, update_above_labels=Settings().update_above_labels)
    assert small.update_above_labels == 150_000
    seed_champion(r, small, backwards_model)
    store_labels(r, campaign(300, seed=16))
    first = jobs.run_retrain(r, small)
    assert first["mode"] == "full" and "settings" not in first  # a starter-like champion: settings chosen
    chosen = Registry.from_settings(r, small).load(first["challenger_version"]).meta["classifier"]
    store_labels(r, [(c.replace(content=c.content.replace("glimmerwave", "zentrofix")), label)
                     for c, label in campaign(30, seed=17, start=1000)], start_at=1_700_000_000.0 + 1000)
    record = jobs.run_retrain(r, small, reason="new wave")
    assert record["mode"] == "full" and record["decision"] == "promote", record
    assert "330 labels in all, not above WINNOW_UPDATE_ABOVE_LABELS (150000)" in record["incremental_declined"]
    assert record["settings"].startswith(f"the serving model's (C {float(chosen['C']):g}")
    refit = Registry.from_settings(r, small).load(record["challenger_version"]).meta["classifier"]
    assert (refit["C"], refit["nb_mix"]) == (chosen["C"], chosen["nb_mix"]) and not refit.get("C_cv_log_loss")
    store_labels(r, list(campaign(40, seed=18, start=2000)), start_at=1_700_000_000.0 + 2000)
    nightly = jobs.run_retrain(r, small, reason="schedule", full=True)
    assert nightly["mode"] == "full" and "settings" not in nightly  # chosen afresh


def test_a_few_new_labels_update_the_champion_incrementally(r, settings, backwards_model):
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(300, seed=16))
    first = jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)
    full = jobs.job_status(r, first)["result"]
    assert full["mode"] == "full" and full["decision"] == "promote"

    # A new campaign the promoted model has never seen, labelled after its fit.
    wave = [(c.replace(content=c.content.replace("glimmerwave", "zentrofix")), label)
            for c, label in campaign(30, seed=17, start=1000)]
    registry = Registry.from_settings(r, settings)
    before = registry.load(full["challenger_version"])
    store_labels(r, wave, start_at=1_700_000_000.0 + 1000)
    second = jobs.enqueue_retrain(r, settings, reason="new wave")
    run_burst(r, settings)
    result = jobs.job_status(r, second)["result"]
    assert result["mode"] == "incremental" and result["decision"] == "promote", result
    assert result["counts"]["new"] == 30 and result["counts"]["labels"] == 330
    assert "incremental update of " + full["challenger_version"] in result["evaluation"]
    info = registry.get(result["challenger_version"])
    assert info["updates_since_full"] == 1 and info["trained_until"] == pytest.approx(1_700_000_000.0 + 1029)
    probe = next(c for c, label in campaign(10, seed=18, start=1) if label == "spam")
    probe = probe.replace(content=probe.content.replace("glimmerwave", "zentrofix"))
    assert registry.load(result["challenger_version"]).score(probe).score > before.score(probe).score

    # Asked for in full, the same state refits on every label.
    third = jobs.enqueue_retrain(r, settings, full=True)
    run_burst(r, settings)
    refit = jobs.job_status(r, third)["result"]
    assert refit["mode"] == "full"


def test_starter_corpora_join_as_a_lighter_base_or_are_skipped_when_absent(r, settings, backwards_model,
                                                                           monkeypatch, tmp_path):
    import training.starter as starter

    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=19))
    settings_with_base = dataclasses.replace(settings, use_starter_corpora=True)
    seen = []
    real_train = jobs._train

    def recording_train(comments, y, weights, **settings):
        seen.append(None if weights is None else sorted(set(weights.round(4))))
        return real_train(comments, y, weights, **settings)

    monkeypatch.setattr(jobs, "_train", recording_train)
    base = [(c, label) for c, label in campaign(20, seed=20, start=5000)]
    monkeypatch.setattr(starter, "corpora", lambda: ([c for c, _ in base], [label for _, label in base]))
    record = jobs.run_retrain(r, settings_with_base, full=True)
    assert record["counts"]["base"] == 20 and record["decision"] == "promote"
    assert all(w is not None and max(w) == 1.0 and min(w) < 1.0 for w in seen)  # base weighted below labels

    def absent():
        raise FileNotFoundError(tmp_path / "datasets")

    monkeypatch.setattr(starter, "corpora", absent)
    seen.clear()
    store_labels(r, campaign(20, seed=21, start=9000), start_at=1_800_000_000.0)
    record = jobs.run_retrain(r, settings_with_base, full=True)
    assert record["counts"]["base"] == 0 and record["decision"] in ("promote", "reject")
    assert seen and all(w is None for w in seen)


def test_a_rollback_during_the_run_is_not_overwritten(r, settings, backwards_model, good_model, monkeypatch):
    registry = Registry.from_settings(r, settings)
    earlier = seed_champion(r, settings, good_model)
    champion = seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(300, seed=7))
    real_gate = jobs._Retrain._gate

    def gate_then_rollback(self, *args):
        decided = real_gate(self, *args)
        registry.rollback(by="admin:alice", reason="the champion misbehaves")  # while the final fit runs
        return decided

    monkeypatch.setattr(jobs._Retrain, "_gate", gate_then_rollback)
    record = jobs.run_retrain(r, settings, full=True)
    assert record["decision"] == "reject"
    assert record["why"] == f"the serving version changed during the run (was {champion}, now {earlier})"
    assert registry.current_version() == earlier
    assert registry.get(record["challenger_version"])["status"] == "candidate"
    assert jobs.recent_runs(r)[0]["decision"] == "reject"


def test_a_champion_that_cannot_be_verified_is_not_replaced_blindly(r, settings, good_model):
    foreign = Registry(r, "another-deployment").publish(good_model, {"kind": "test"}, promote=True)
    store_labels(r, campaign(300, seed=7))
    record = jobs.run_retrain(r, settings)
    assert record["decision"] == "reject"
    assert f"serving model {foreign} cannot be verified" in record["why"]
    registry = Registry.from_settings(r, settings)
    assert registry.current_version() == foreign and [m["version"] for m in registry.list()] == [foreign]
    event = registry.history()[0]
    assert event["kind"] == "reject" and event["reason"] == record["why"]


def test_a_large_full_retrain_extracts_features_once(r, settings, backwards_model, monkeypatch):
    from training import fitting

    monkeypatch.setattr(fitting, "EXACT_MAX", 100)
    monkeypatch.setattr(fitting, "CHUNK", 64)
    monkeypatch.setattr(fitting, "CAL_MIN", 30)
    built = []
    real = fitting.Featurized.__init__

    def counting(self, comments, *args, **kwargs):
        built.append(len(comments))
        real(self, comments, *args, **kwargs)

    monkeypatch.setattr(fitting.Featurized, "__init__", counting)
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(300, seed=7))
    record = jobs.run_retrain(r, settings, full=True)
    assert record["decision"] == "promote", record["why"]
    assert built == [300]  # holdout fit, both models' scores and the final fit share one extraction
    assert "features" in record["timings_s"]
    info = Registry.from_settings(r, settings)
    model = info.load(info.current_version())
    assert model.meta["classifier"]["solver"].startswith("sgd") and model.meta["classifier"]["rows_fitted"] > 200
    spam, _ = next(campaign(2, seed=123, start=1))
    assert model.score(spam).score > 0.5


def test_more_labels_than_memory_holds_are_one_pass_each_text_featurised_once(r, settings, backwards_model,
                                                                              monkeypatch):
    import training.starter as starter
    from training import fitting

    monkeypatch.setattr(fitting, "EXACT_MAX", 100)
    monkeypatch.setattr(fitting, "IN_MEMORY_MAX", 200)
    monkeypatch.setattr(fitting, "CHUNK", 64)
    monkeypatch.setattr(fitting, "CAL_MIN", 30)
    monkeypatch.setattr(fitting, "workers", lambda: 1)  # in-process, so the featurised rows can be counted
    featurised = []
    real = fitting.training_matrix

    def counting(items, config, spool=None):
        items = list(items)
        featurised.extend(c.content for c in items)
        return real(items, config, spool)

    monkeypatch.setattr(fitting, "training_matrix", counting)
    seed_champion(r, settings, backwards_model)
    records = store_labels(r, campaign(600, seed=7))
    LabelStore(r).remove(records[5].id, by="moderator:test")
    base = list(campaign(20, seed=20, start=5000))
    monkeypatch.setattr(starter, "corpora", lambda: ([c for c, _ in base], [label for _, label in base]))
    record = jobs.run_retrain(r, dataclasses.replace(settings, use_starter_corpora=True), full=True)
    assert record["decision"] == "promote", record["why"]
    assert record["counts"] == {"labels": 599, "spam": 299, "ham": 300, "base": 20, "unseen_by_champion": 599,
                                "eval": 120}
    assert record["evaluation"].startswith("holdout of the newest 120 labels: one pass")
    assert sorted(featurised) == sorted([r_.comment.content for k, r_ in enumerate(records) if k != 5] +
                                        [c.content for c, _ in base])  # every text once, none twice
    registry = Registry.from_settings(r, settings)
    model = registry.load(registry.current_version())
    assert model.meta["classifier"]["solver"].startswith("sgd (log loss, 1 pass, averaged")
    assert model.meta["counts"] == {"spam": 299 + 10, "ham": 300 + 10}
    assert model.meta["sources"][SITE] == {"spam": 299, "ham": 300}
    assert registry.get(registry.current_version())["trained_until"] == records[-1].labelled_at
    spam, _ = next(campaign(2, seed=123, start=1))
    assert model.score(spam).score > 0.5


def test_retrain_wait_prints_only_the_result_on_stdout(r, settings, backwards_model, capsys):
    """`winnow retrain --wait --json | jq` works: the job id and the progress lines go to stderr."""
    from training.cli import main

    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=14))
    codes = []
    shell = threading.Thread(target=lambda: codes.append(main(["retrain", "--wait", "--json", "--reason",
                                                                "from the shell"])))
    shell.start()
    deadline = time.monotonic() + 20
    while Queue(settings.queue_name, connection=r).count == 0:
        assert time.monotonic() < deadline and shell.is_alive(), "the retrain was never queued"
        time.sleep(0.05)
    run_burst(r, settings)  # rq's worker wants the main thread (signal handlers)
    shell.join(60)
    assert codes == [0]
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert record["decision"] == "promote" and record["reason"] == "from the shell"
    assert f"{record['job_id']} queued" in err
    assert main(["retrain", "--reason", "no wait"]) == 0
    assert capsys.readouterr().out.strip().startswith("retrain-")  # without --wait, the job id for scripts


def test_spam_waves_are_refitted_with_every_label_not_drifted_into_by_updates(r, settings):
    """Moderators label a wave of spam and nothing else: updating the model on it alone would pull it towards
    calling everything spam, which cross-validation over spam alone cannot see."""
    seed_champion(r, settings, train([c for c, _ in campaign(200, seed=1)], [x for _, x in campaign(200, seed=1)]))
    store_labels(r, campaign(600, seed=7))
    assert jobs.run_retrain(r, settings, full=True)["decision"] == "promote"
    probe_ham = [c for c, label in campaign(300, seed=99, start=100_000) if label == "ham"]

    def ham_flagged() -> int:
        model = Registry.from_settings(r, settings).load(Registry.from_settings(r, settings).current_version())
        return sum(model.score(c).score >= 0.5 for c in probe_ham)

    before = ham_flagged()
    start = 1_800_000_000.0
    for wave in range(3):
        rows = [(c.replace(content=c.content.replace("glimmerwave", f"zen{wave}fix")), x)
                for c, x in campaign(300, seed=1000 + wave, start=50_000 + wave * 1000) if x == "spam"][:50]
        store_labels(r, rows, start_at=start + wave * 100)
        record = jobs.run_retrain(r, settings)
        assert record["mode"] == "full" and "50 spam and 0 ham" in record["incremental_declined"]
    assert ham_flagged() <= before + 3


def test_an_update_that_unlearns_older_labels_is_refused(r, settings):
    """New labels that agree among themselves (so cross-validation over them passes) but would make the model
    flag the ham it learned before: the update is judged on older labels too."""
    store_labels(r, campaign(600, seed=7))
    seed_champion(r, settings, train([c for c, _ in campaign(600, seed=7)], [x for _, x in campaign(600, seed=7)]),
                  kind="retrain", trained_until=1_700_000_000.0 + 599, updates_since_full=0)
    # The site's everyday ham, now labelled spam (plus a little ham that looks nothing like it).
    flipped = [(c, "spam") for c, x in campaign(120, seed=31, start=200_000) if x == "ham"][:45]
    other = [(c.replace(content=f"unrelated note number {i} about the weather"), "ham")
             for i, (c, _) in enumerate(campaign(10, seed=32))][:5]
    store_labels(r, flipped + other, start_at=1_800_000_000.0)
    record = jobs.run_retrain(r, settings)
    assert record["mode"] == "incremental" and record["decision"] == "reject", record["why"]
    assert record["why"].startswith("on ") and "would unlearn what came before" in record["why"]
    assert record["metrics"]["older"]["challenger"]["ham_flagged"] > record["metrics"]["older"]["champion"]["ham_flagged"]


def test_a_run_that_lost_its_lock_ends_without_a_retry_and_a_recovered_run_carries_on_alone(r, settings,
                                                                                          backwards_model,
                                                                                          monkeypatch):
    """Redis stalled past the lock's lease: the clock's recovery continues the run as a new job, and the stalled
    execution, when it wakes, promotes nothing, gets no rq retry, and leaves the flight to its successor: one run
    at a time, one promotion."""
    seed_champion(r, settings, backwards_model)
    store_labels(r, campaign(60, seed=15))
    real_train = jobs._train
    recovered = []

    def promotions() -> int:
        return [e["kind"] for e in Registry.from_settings(r, settings).history()].count("promote")

    seeded = promotions()

    def stalled(*args, **kwargs):
        if not recovered:
            r.delete(keys.RETRAIN_LOCK)  # the lease ran out while Redis did not answer
            recovered.append(jobs.recover_abandoned(r, dataclasses.replace(settings, retrain_lock_seconds=0)))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "_train", stalled)
    job_id = jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)  # the stalled run, then its successor
    successor = recovered[0]
    assert successor not in (None, job_id)
    stale = Job.fetch(job_id, connection=r)
    assert stale.return_value()["decision"] == "abandoned" and stale.get_status() != JobStatus.SCHEDULED  # no retry
    assert jobs.job_status(r, successor)["result"]["decision"] == "promote"
    assert promotions() == seeded + 1  # the successor's, and none from the stalled run
    assert r.get(keys.RETRAIN_ACTIVE) is None and Queue(settings.queue_name, connection=r).count == 0

    # No recovery at all (no clock): the run that lost its lock closes its own flight.
    recovered.append("done")
    r.delete(keys.RETRAIN_LOCK)
    monkeypatch.setattr(jobs, "_train", lambda *a, **k: (r.delete(keys.RETRAIN_LOCK), real_train(*a, **k))[1])
    store_labels(r, campaign(30, seed=16), start_at=1_800_000_000.0)
    alone = jobs.enqueue_retrain(r, settings)
    run_burst(r, settings)
    assert Job.fetch(alone, connection=r).return_value()["decision"] == "abandoned"
    assert r.get(keys.RETRAIN_ACTIVE) is None



@pytest.mark.parametrize("error,code,said", [
    (jobs.LostLock("the retrain lock expired during the run; not promoting"), 1, "without promoting anything"),
    (redis.ConnectionError("Connection refused"), 3, "nothing was promoted"),
])
def test_retrain_now_says_what_went_wrong_without_a_traceback(r, settings, monkeypatch, capsys, error, code, said):
    from training.cli import main

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(jobs, "run_here", failing)
    assert main(["retrain", "--now"]) == code
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_the_nightly_refit_replaces_a_champion_built_by_quick_updates(r, settings, backwards_model):
    """Every label has been seen by a champion made of chained updates: the scheduled refit is still judged (in the
    champion's favour) instead of skipped until the 50-update cap."""
    rows = store_labels(r, campaign(300, seed=21))
    seed_champion(r, settings, backwards_model, kind="retrain", trained_until=rows[-1].labelled_at,
                  updates_since_full=3)
    quick = jobs.run_retrain(r, settings)
    assert quick["decision"] == "skip"  # nothing new: no quick run
    nightly = jobs.run_retrain(r, settings, full=True, reason="schedule")
    assert nightly["mode"] == "full" and nightly["decision"] == "promote", nightly["why"]
    assert "has seen every label" in nightly["judged_on_seen"]
    again = jobs.run_retrain(r, settings, full=True, reason="schedule")
    assert again["decision"] == "skip"  # a full fit's champion: nothing unseen, nothing to judge


def test_the_nightly_refit_can_replace_a_champion_that_fits_its_labels_well(r, settings):
    """The usual case: quick updates made the champion fit every label it has seen, the newest ones best (a spam
    campaign learned by updates). The nightly refit must not be judged out of sample against the champion's
    in-sample scores, or it loses every night and the chain of updates serves until the 50-update cap."""
    old = list(campaign(240, seed=31))
    # The newest labels: a campaign the older labels know nothing of.
    wave = [(Comment(content=f"{opener} {topic}. Marlow Quinn recovered our {coin} in two days, find him on "
                             f"telegram #{i}", author=f"fan{i}"), "spam")
            for i, (opener, topic, coin) in enumerate((o, t, c) for o in ("Nice post on", "Good points about")
                                                      for t in ("sourdough", "bike chains", "tax forms")
                                                      for c in ("bitcoin", "eth", "usdt", "wallet", "ledger"))]
    rows = store_labels(r, old + wave)
    champion = train([c for c, _ in old + wave], [label for _, label in old + wave])
    seed_champion(r, settings, champion, kind="retrain", trained_until=rows[-1].labelled_at, updates_since_full=3)
    nightly = jobs.run_retrain(r, settings, full=True, reason="schedule")
    assert "has seen every label" in nightly["judged_on_seen"]
    assert nightly["decision"] == "promote", nightly["why"]


def test_retrain_wait_follows_a_run_that_continued_as_another_job(r, settings, monkeypatch, capsys):
    from training.cli import main

    done = {"decision": "promote", "why": "better", "version": "v2"}
    states = {"retrain-1": {"id": "retrain-1", "status": "failed", "continued_as": "retrain-2",
                            "error": "its worker died mid-retrain; continued as retrain-2"},
              "retrain-2": {"id": "retrain-2", "status": "finished", "continued_as": None, "result": done}}
    monkeypatch.setattr(jobs, "enqueue_retrain", lambda *a, **k: "retrain-1")
    monkeypatch.setattr(jobs, "job_status", lambda redis, job_id: states[job_id])
    assert main(["retrain", "--wait"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "promote v2: better" and "continues as retrain-2" in err
