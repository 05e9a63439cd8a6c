"""The learning loop's RQ jobs as plain functions: retrain behind a champion/challenger gate, and its triggers.

A retrain never runs twice at once (a Redis lock plus one in-flight job id), a retrain asked for while one runs
becomes exactly one follow-up, and a retrain that dies half way leaves the serving model untouched.
Nothing here imports Flask; web handlers and the CLI call enqueue_retrain / job_status, workers run retrain.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import math
import threading
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import redis as redis_lib
from rq import Queue, Retry, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus, get_current_job
from rq.job_lifecycle import record_job_failure
from rq.registry import StartedJobRegistry

from training import rediskeys as keys
from training.registry import Registry, _text
from training.settings import Settings

log = logging.getLogger("winnow.jobs")

# Job options, set explicitly rather than inherited from rq's defaults.
JOB_TIMEOUT = 1800          # seconds; a 1M-label retrain takes a few minutes
RESULT_TTL = 7 * 86400      # finished retrains stay visible at GET /api/v1/jobs/<id> for a week
FAILURE_TTL = 30 * 86400
RETRY_INTERVALS = [10, 30, 60]
JOB_PREFIX = "retrain-"
HERE_PREFIX = "here-"       # the flight of a retrain run in a shell (`winnow retrain --now`), not on a worker

# The gate's evaluation plan.
HOLDOUT_FRACTION = 0.2      # newest share of labels held out
CV_BELOW = 200              # fewer labels than this: stratified cross-validation instead of a holdout
CV_FOLDS = 5
MIN_EVAL = 10               # fewer new labels than this cannot tell two models apart: skip
MIN_PER_CLASS = 2
BASE_WEIGHT = 0.25          # per-example weight of the starter corpora, always below a site label's 1.0
RUNS_KEPT = 200
INCREMENTAL_MAX = 5000      # more new labels than this (or than INCREMENTAL_SHARE of all) means a full retrain
INCREMENTAL_SHARE = 0.1
MAX_UPDATES = 50            # chained incremental updates before a full retrain is forced
REPLAY_PER_CLASS = 500      # an update is also judged on up to this many of the newest older ham and spam labels
DRIFT_MCC_TOLERANCE = 0.05  # ... where it is refused for losing more MCC than this, or flagging more than
DRIFT_HAM_SHARE = 0.01      # ... this share of the older ham beyond what the champion flags (at least one more)
UPDATE_EPOCHS = 3           # gentler than the model core's defaults: at 5 passes with step 0.2, 40 ordinary new
UPDATE_LEARNING_RATE = 0.05 # labels pulled a well-fitted model off (out-of-fold MCC 0.95 -> 0.87 in the benchmark)
C_SEARCH_SAMPLE = 20_000    # above this many training examples, pick the regularisation on a sample of this size

WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.CREATED}


class RetrainBusy(RuntimeError):
    """Another retrain holds the lock; rq retries this job with backoff."""


class LostLock(RuntimeError):
    """The lock lease ran out mid-run (a stalled process): refuse to promote, another run may own the loop now."""


# ---- triggers ------------------------------------------------------------------------------------------------------
def enqueue_retrain(redis: redis_lib.Redis, settings: Settings, reason: str = "manual", by: str | None = None,
                    site: str | None = None, full: bool = False) -> str:
    """Ask for a retrain and return its job id.

    While a retrain waits in the queue, asking again returns that job's id (it will read the new labels anyway);
    while one runs, the first ask books exactly one follow-up run and every later ask returns the same id. A full
    refit asked for is never lost that way: it books the follow-up as a full one (or makes the booked one full)
    unless the job it would join is a full refit itself.
    """
    recover_abandoned(redis, settings)
    queue = Queue(settings.queue_name, connection=redis)

    def decide(pipe, active, pending):
        state = _flight_state(redis, active)
        if state == "waiting" and (not full or _refits_fully(redis, active)):
            return active
        if state is not None:  # running, or waiting to run without the full refit asked for now
            if pending is not None:
                spec = json.loads(pending)
                if full and not spec.get("full"):
                    pipe.multi()
                    pipe.set(keys.RETRAIN_PENDING, json.dumps({**spec, "full": True}))
                return spec["job_id"]
            job_id = _next_job_id(redis)
            pipe.multi()
            pipe.set(keys.RETRAIN_PENDING, json.dumps(
                {"job_id": job_id, "reason": reason, "by": by, "site": site, "full": full, "after": active,
                 "asked_at": time.time()}))
            return job_id
        # Nothing in flight: a follow-up stranded by a failed run keeps its promised id.
        spec = json.loads(pending) if pending is not None else {}
        job_id = spec.get("job_id") or _next_job_id(redis)
        pipe.multi()
        pipe.set(keys.RETRAIN_ACTIVE, job_id)
        pipe.delete(keys.RETRAIN_PENDING)
        _enqueue(queue, job_id, site=spec.get("site", site), reason=spec.get("reason", reason),
                 by=spec.get("by", by), full=bool(spec.get("full", full)), pipeline=pipe)
        log.info("retrain %s enqueued (%s)", job_id, reason)
        return job_id

    return _in_flight_transaction(redis, decide)


def _in_flight_transaction(redis: redis_lib.Redis, decide):
    """Run decide(pipe, active_id, pending_json) under WATCH of the in-flight keys, retrying when they move.

    `decide` reads, then either returns without queueing commands or calls pipe.multi() and queues its writes;
    both in-flight keys change only through here, so a run finishing and a new ask can never interleave.
    """
    while True:
        with redis.pipeline() as pipe:
            try:
                pipe.watch(keys.RETRAIN_ACTIVE, keys.RETRAIN_PENDING)
                result = decide(pipe, _text(pipe.get(keys.RETRAIN_ACTIVE)), pipe.get(keys.RETRAIN_PENDING))
                if pipe.explicit_transaction:
                    pipe.execute()
                return result
            except redis_lib.WatchError:
                continue


def maybe_trigger_retrain(redis: redis_lib.Redis, settings: Settings, new_labels: int = 0,
                          overturns: int = 0) -> str | None:
    """Count labels and overturned verdicts; enqueue a retrain each time a threshold is crossed.

    Called after every stored label, so the common path is two INCRBYs in one round trip.
    """
    with redis.pipeline(transaction=False) as pipe:
        pipe.incrby(keys.RETRAIN_NEW_LABELS, max(0, int(new_labels)))
        pipe.incrby(keys.RETRAIN_OVERTURNS, max(0, int(overturns)))
        labels_now, overturns_now = pipe.execute()
    why = []
    if _crossed(labels_now, new_labels, settings.retrain_after_labels):
        why.append(f"{labels_now} new labels")
    if _crossed(overturns_now, overturns, settings.retrain_after_overturns):
        why.append(f"{overturns_now} overturned verdicts")
    if not why:
        return None
    return enqueue_retrain(redis, settings, reason="after " + " and ".join(why), by="auto")


def _crossed(total: int, added: int, threshold: int) -> bool:
    # Every multiple of the threshold asks again: if a retrain is already queued or running the ask is coalesced,
    # and if an earlier ask was lost the next multiple still fires.
    if threshold <= 0 or added <= 0:
        return False
    return total // threshold > (total - added) // threshold


def scheduled_retrain() -> str:
    """The clock's periodic entry: asks for a retrain through the same single-flight path as everyone else."""
    job = get_current_job()
    settings = Settings.from_env()
    redis = job.connection if job is not None else redis_lib.Redis.from_url(settings.redis_url)
    return enqueue_retrain(redis, settings, reason="schedule", by="clock", full=True)


def recover_retrain() -> str | None:
    """The clock's minutely check: re-runs a retrain whose worker died, or a follow-up a failed run stranded."""
    job = get_current_job()
    settings = Settings.from_env()
    redis = job.connection if job is not None else redis_lib.Redis.from_url(settings.redis_url)
    recovered = recover_abandoned(redis, settings)
    if recovered is None and redis.exists(keys.RETRAIN_PENDING):
        active = _text(redis.get(keys.RETRAIN_ACTIVE))
        if _flight_state(redis, active) is None:
            return enqueue_retrain(redis, settings, reason="stranded follow-up", by="clock")
    return recovered


def recover_abandoned(redis: redis_lib.Redis, settings: Settings) -> str | None:
    """Requeue the in-flight retrain when its worker died mid-run (the job says started but nobody holds the lock).

    rq would notice too, but only when the dead execution's heartbeat expires and some worker runs its maintenance
    (every 10 minutes); this is checked on every trigger and by the clock every minute. Returns the id the run
    continues under (a new job: the abandoned one is marked failed, naming it), or None.
    """
    active = _text(redis.get(keys.RETRAIN_ACTIVE))
    if not active or redis.exists(keys.RETRAIN_LOCK):
        return None
    try:
        job = Job.fetch(active, connection=redis)
    except NoSuchJobError:
        return None
    if job.get_status(refresh=False) != JobStatus.STARTED:
        return None
    if str(job.meta.get("stage", "")).startswith("done"):
        # The run ended and recorded its decision; its worker released the lock and is closing the flight (or died
        # before it could). Close it here, twice is harmless; running the same retrain again would not be.
        _finish_flight(redis, settings, active)
        return None
    began = job.started_at or job.enqueued_at
    if began is None or time.time() - began.timestamp() < 2 * settings.retrain_lock_seconds:
        return None  # it may not have taken the lock yet
    queue = Queue(job.origin or settings.queue_name, connection=redis)
    started_registry = StartedJobRegistry(queue=queue)
    stale = [f"{jid}:{eid}" for jid, eid in started_registry.get_job_and_execution_ids(cleanup=False) if jid == active]
    recoveries = int(job.meta.get("recoveries", 0)) + 1
    # The run continues under a new job id: the abandoned execution may yet wake (a stalled worker, not a dead
    # one), and whatever it then records lands on its own job, not on the one now running, nor starts a second
    # flight; its end finds the flight is no longer its own and leaves it alone.

    def decide(pipe, now_active, pending):
        if now_active != active:
            return None  # the flight moved on meanwhile
        pipe.multi()
        if stale:
            pipe.zrem(started_registry.key, *stale)
        if recoveries > len(RETRY_INTERVALS):
            record_job_failure(job, "its worker died mid-retrain too many times", pipe)
            pipe.delete(keys.RETRAIN_ACTIVE)
            log.error("retrain %s was abandoned by a dead worker %d times; given up", active, recoveries)
            return None
        successor = _next_job_id(redis)
        record_job_failure(job, f"its worker died mid-retrain; continued as {successor}", pipe)
        kwargs = job.kwargs or {}
        pipe.set(keys.RETRAIN_ACTIVE, successor)
        pipe.set(keys.RETRAIN_CONTINUED.format(job_id=active), successor, ex=RESULT_TTL)
        _enqueue(queue, successor, site=kwargs.get("site"), reason=kwargs.get("reason", "recovered"),
                 by=kwargs.get("requested_by"), full=bool(kwargs.get("full")), pipeline=pipe,
                 meta={"recoveries": recoveries, "recovered_from": active})
        log.warning("retrain %s was abandoned by a dead worker; continued as %s", active, successor)
        return successor

    return _in_flight_transaction(redis, decide)


def job_status(redis: redis_lib.Redis, job_id: str) -> dict | None:
    """What GET /api/v1/jobs/<id> shows: status, progress and the result or error; None for an unknown id."""
    pending = redis.get(keys.RETRAIN_PENDING)
    if pending is not None:
        spec = json.loads(pending)
        if spec.get("job_id") == job_id:
            return {"id": job_id, "status": "pending", "progress": 0.0,
                    "stage": f"waits for retrain {spec.get('after')} to finish", "reason": spec.get("reason"),
                    "requested_by": spec.get("by"), "enqueued_at": None, "started_at": None, "ended_at": None,
                    "result": None, "error": None, "continued_as": None}
    if job_id.startswith(HERE_PREFIX):
        return _shell_run_status(redis, job_id)
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return None
    status = job.get_status(refresh=False)
    meta = job.get_meta(refresh=False)
    out: dict[str, Any] = {
        "id": job.id, "status": status.value if status else "unknown", "function": job.func_name,
        "progress": meta.get("progress", 1.0 if status == JobStatus.FINISHED else 0.0),
        "stage": meta.get("stage"), "reason": job.kwargs.get("reason"),
        "requested_by": job.kwargs.get("requested_by"),
        "enqueued_at": _iso(job.enqueued_at), "started_at": _iso(job.started_at), "ended_at": _iso(job.ended_at),
        "retries_left": job.retries_left, "result": None, "error": None,
        "continued_as": _text(redis.get(keys.RETRAIN_CONTINUED.format(job_id=job_id))),
    }
    if status == JobStatus.FINISHED:
        out["result"] = job.return_value()
    elif status == JobStatus.FAILED:
        latest = job.latest_result()
        exc = (latest.exc_string if latest is not None else None) or ""
        out["error"] = exc.strip().splitlines()[-1] if exc.strip() else "failed"
    return out


def _shell_run_status(redis: redis_lib.Redis, run_id: str) -> dict | None:
    """A run in a shell (`winnow retrain --now`) has no rq job: it is running while it holds the in-flight key and
    its lease, and once ended its run record says how it ended. A job waiting for it names it."""
    out: dict[str, Any] = {"id": run_id, "status": None, "function": "winnow retrain --now", "progress": 0.0,
                           "stage": "runs in a shell (winnow retrain --now)", "reason": None, "requested_by": None,
                           "enqueued_at": None, "started_at": None, "ended_at": None, "retries_left": None,
                           "result": None, "error": None, "continued_as": None}
    for record in recent_runs(redis, RUNS_KEPT):
        if record.get("job_id") == run_id:
            started, ended = record.get("started_at"), record.get("finished_at")
            ended_as = {"status": "failed", "stage": "failed", "error": record.get("error")} \
                if record.get("decision") == "failed" else \
                {"status": "finished", "stage": f"done: {record.get('decision')}", "result": record}
            return out | {"progress": 1.0, "reason": record.get("reason"), "requested_by": record.get("requested_by"),
                          "started_at": _iso(_when(started)), "ended_at": _iso(_when(ended))} | ended_as
    if _text(redis.get(keys.RETRAIN_ACTIVE)) == run_id and _flight_state(redis, run_id) == "running":
        return out | {"status": "started"}
    return None


def _when(ts) -> datetime | None:
    return datetime.fromtimestamp(float(ts), timezone.utc) if ts is not None else None


def recent_runs(redis: redis_lib.Redis, limit: int = 20) -> list[dict]:
    return [json.loads(raw) for raw in redis.lrange(keys.RETRAIN_RUNS, 0, max(0, limit - 1))]


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _next_job_id(redis: redis_lib.Redis) -> str:
    return f"{JOB_PREFIX}{int(redis.incr(keys.RETRAIN_SEQ))}"


def _flight_state(redis: redis_lib.Redis, job_id: str | None) -> str | None:
    """'waiting' (queued, scheduled for a retry), 'running', or None when nothing is in flight."""
    if not job_id:
        return None
    if job_id.startswith(HERE_PREFIX):  # a run in a shell: in flight while its lease lives
        return "running" if redis.exists(keys.RETRAIN_LOCK) else None
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return None
    status = job.get_status(refresh=False)
    if status in WAITING:
        return "waiting"
    if status == JobStatus.STARTED:
        return "running"
    return None


def _refits_fully(redis: redis_lib.Redis, job_id: str) -> bool:
    try:
        return bool(Job.fetch(job_id, connection=redis).kwargs.get("full"))
    except NoSuchJobError:
        return False


def _enqueue(queue: Queue, job_id: str, *, site, reason, by, full=False, pipeline=None,
             meta: dict | None = None) -> Job:
    return queue.enqueue(
        retrain, kwargs={"site": site, "reason": reason, "requested_by": by, "full": full}, job_id=job_id,
        job_timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
        retry=Retry(max=len(RETRY_INTERVALS), interval=list(RETRY_INTERVALS)),
        description=f"retrain ({reason})", meta={"stage": "queued", "progress": 0.0, **(meta or {})},
        pipeline=pipeline)


def _finish_flight(redis: redis_lib.Redis, settings: Settings, job_id: str) -> str | None:
    """Close this run's flight; when a follow-up was asked for meanwhile, enqueue exactly that one."""
    queue = Queue(settings.queue_name, connection=redis)

    def decide(pipe, active, pending):
        if active != job_id:  # the flight is no longer this run's (its lock ran out and another took over)
            return None
        pipe.multi()
        if pending is not None:
            spec = json.loads(pending)
            pipe.set(keys.RETRAIN_ACTIVE, spec["job_id"])
            pipe.delete(keys.RETRAIN_PENDING)
            _enqueue(queue, spec["job_id"], site=spec.get("site"), reason=f"follow-up: {spec.get('reason')}",
                     by=spec.get("by"), full=bool(spec.get("full")), pipeline=pipe)
            return spec["job_id"]
        pipe.delete(keys.RETRAIN_ACTIVE)
        return None

    return _in_flight_transaction(redis, decide)


# ---- the job -------------------------------------------------------------------------------------------------------
def retrain(site: str | None = None, reason: str = "manual", requested_by: str | None = None,
            full: bool = False) -> dict:
    """The RQ job: retrain from the stored labels, gate, record; then run the one follow-up if one was asked for."""
    job = get_current_job()
    settings = Settings.from_env()
    redis = job.connection if job is not None else redis_lib.Redis.from_url(settings.redis_url)
    try:
        result = run_retrain(redis, settings, site=site, reason=reason, requested_by=requested_by, full=full,
                             job=job)
    except LostLock as exc:
        # The lease ran out under this run (Redis stalled longer than it lasts); it has promoted nothing. Not a
        # failure for rq to retry: recovery may have continued the run under a new job id meanwhile, and then the
        # flight is that job's (closing the flight below does nothing); otherwise the flight ends here.
        log.warning("retrain %s gave up: %s", job.id if job is not None else "(no job)", exc)
        result = {"decision": "abandoned", "why": f"the retrain lock was lost mid-run: {exc}",
                  "job_id": job.id if job is not None else None}
    if job is not None:
        follow_up = _finish_flight(redis, settings, job.id)
        if follow_up:
            result["follow_up"] = follow_up
    return result


def run_retrain(redis: redis_lib.Redis, settings: Settings, *, site: str | None = None, reason: str = "manual",
                requested_by: str | None = None, full: bool = False, job: Job | None = None) -> dict:
    """One retrain under the lock, callable without rq (the CLI's --now, benchmarks). Returns the run record.

    full=False lets a few new labels update the champion instead of refitting on every label (see
    _Retrain._incremental_since); full=True always refits."""
    lease = _Lease(redis, settings.retrain_lock_seconds)
    _progress(job, "waiting for the retrain lock", 0.0)
    if not lease.acquire(wait=settings.retrain_lock_seconds + 5):
        raise RetrainBusy("another retrain holds the lock")
    try:
        return _run_locked(redis, settings, lease, job, site, reason, requested_by, full)
    finally:
        lease.release()


def run_here(redis: redis_lib.Redis, settings: Settings, *, reason: str = "manual", requested_by: str | None = None,
             full: bool = False) -> dict:
    """`winnow retrain --now`: one retrain in this process, inside the single flight. Returns the run record.

    Refused (RetrainBusy) while a retrain runs, or waits in the queue for a worker that is up. A queued retrain no
    worker would run is taken over: cancelled, and run here (a full refit if it was one). While it runs it is the
    flight: asking for a retrain meanwhile books the one follow-up, which it enqueues when it ends, instead of
    queueing a job that would wait for the lock and use up its retries. If this process dies, its flight ends with
    its lock's lease."""
    recover_abandoned(redis, settings)
    active = _text(redis.get(keys.RETRAIN_ACTIVE))
    state = _flight_state(redis, active)
    if state == "waiting" and not Worker.count(connection=redis, queue=Queue(settings.queue_name, connection=redis)):
        try:
            job = Job.fetch(active, connection=redis)
            full = full or bool(job.kwargs.get("full"))
            job.meta.update(stage="taken over by `winnow retrain --now`")
            job.save_meta()
            job.cancel()
            reason = f"{reason} (took over {active}, which no worker was up to run)"
        except (NoSuchJobError, InvalidJobOperation):  # started or ended meanwhile
            pass
        state = _flight_state(redis, active)
    if state is not None:
        raise RetrainBusy(f"retrain {active} is queued or running")
    lease = _Lease(redis, settings.retrain_lock_seconds)
    if not lease.acquire(wait=settings.retrain_lock_seconds + 5):
        raise RetrainBusy("another retrain holds the lock")
    try:
        here = f"{HERE_PREFIX}{int(redis.incr(keys.RETRAIN_SEQ))}"

        def decide(pipe, active, pending):
            # Holding the lock, an earlier run in a shell is over (its lease ran out); a job may have been
            # queued between the look above and the lock.
            if active and not active.startswith(HERE_PREFIX) and _flight_state(redis, active) is not None:
                return active
            pipe.multi()
            pipe.set(keys.RETRAIN_ACTIVE, here)
            return here

        claimed = _in_flight_transaction(redis, decide)
        if claimed != here:
            raise RetrainBusy(f"retrain {claimed} is queued or running")
        started = time.time()
        try:
            return _run_locked(redis, settings, lease, None, None, reason, requested_by, full, run_id=here)
        except BaseException as exc:  # a crash or Ctrl-C: the run's record says so (a worker's job keeps its own)
            _record_failed_run(redis, here, reason, requested_by, started, exc)
            raise
        finally:
            follow_up = _finish_flight(redis, settings, here)
            if follow_up:
                log.info("retrain %s ended; follow-up %s enqueued", here, follow_up)
    finally:
        lease.release()


def _record_failed_run(redis: redis_lib.Redis, run_id: str, reason: str, requested_by: str | None, started: float,
                       exc: BaseException) -> None:
    error = f"{type(exc).__name__}: {exc}".strip().rstrip(":") if str(exc) else type(exc).__name__
    record = {"job_id": run_id, "reason": reason, "requested_by": requested_by, "started_at": started,
              "finished_at": time.time(), "decision": "failed", "why": error, "error": error}
    try:
        with redis.pipeline(transaction=False) as pipe:
            pipe.lpush(keys.RETRAIN_RUNS, json.dumps(record))
            pipe.ltrim(keys.RETRAIN_RUNS, 0, RUNS_KEPT - 1)
            pipe.execute()
    except redis_lib.RedisError:  # Redis itself is what failed: nothing to record it in
        pass


def _run_locked(redis: redis_lib.Redis, settings: Settings, lease: "_Lease", job: Job | None, site: str | None,
                reason: str, requested_by: str | None, full: bool, run_id: str | None = None) -> dict:
    # Labels counted from here on belong to the next retrain.
    with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.RETRAIN_NEW_LABELS, 0)
        pipe.set(keys.RETRAIN_OVERTURNS, 0)
        pipe.execute()
    run = _Retrain(redis, settings, lease, job, site, reason, requested_by, full)
    if run_id:
        run.record["job_id"] = run_id
    return run.run()


@dataclass
class _Examples:
    comments: list
    y: np.ndarray
    base_comments: list = field(default_factory=list)
    base_y: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))


class _Retrain:
    def __init__(self, redis, settings: Settings, lease: "_Lease", job, site, reason, requested_by, full=False):
        self.redis = redis
        self.settings = settings
        self.lease = lease
        self.job = job
        self.site = site
        self.reason = reason
        self.requested_by = requested_by
        self.full = full
        self.registry = Registry.from_settings(redis, settings)
        self.started = time.time()
        self.C: float | None = None
        self.nb_mix: float | None | str = "auto"  # the exact fit's column scaling: "auto" chooses it
        self.cv = False
        self.shared = None  # every comment featurised once, for runs large enough to fit by SGD
        self.timings: dict[str, float] = {}
        self.record: dict[str, Any] = {
            "job_id": job.id if job is not None else None, "reason": reason, "requested_by": requested_by,
            "site": site, "full_requested": full, "started_at": self.started,
        }

    def run(self) -> dict:
        from training import artifacts

        champion_version = self.registry.bootstrap()
        champion_info = self.registry.get(champion_version)
        self.record["champion_version"] = champion_version
        try:
            champion = self.registry.load(champion_version)
        except artifacts.ArtifactError as exc:
            # Without a champion to compare with, the gate would pass any challenger, however bad.
            why = (f"the serving model {champion_version} cannot be verified ({exc}), so no challenger can be "
                   f"judged against it; promote a version that loads, then retrain")
            log.error("retrain refused: %s", why)
            self.registry.record_rejection({"version": None}, by=self._by(), reason=why)
            return self._finish("reject", why)
        since = self._incremental_since(champion, champion_info)
        if since is not None:
            done = self._run_incremental(champion, champion_version, champion_info, since)
            if done is not None:
                return done  # else the update was declined before it touched the champion: refit on every label
        self.record["mode"] = "full"
        self._progress("reading labels", 0.05)
        started = time.perf_counter()
        cutoff = champion_info.get("trained_until")
        index = _label_index(self.redis, self.site, None if cutoff is None else float(cutoff))
        unseen = index.newer
        if self.full and int(champion_info.get("updates_since_full", 0)) > 0 and unseen < MIN_EVAL:
            # A refit asked for (the nightly one) over a champion built by quick updates: every label is one the
            # champion has seen, so none is fair to judge it on; both are judged on labels both have seen (below)
            # rather than leaving the updates to serve until the 50-update cap.
            unseen = len(index.ids)
            self.record["judged_on_seen"] = (
                f"the champion was updated {champion_info.get('updates_since_full')} times since its last full fit "
                "and has seen every label: the refit on every label is judged against it on labels both have seen")
        base_comments, base_y = _starter_corpora() if self.settings.use_starter_corpora else ([], np.zeros(0))
        if len(index.ids) >= CV_BELOW and len(index.ids) + len(base_comments) > _in_memory_max():
            self.timings["read index"] = time.perf_counter() - started
            plan = self._plan(index.y, unseen, len(base_comments), champion_version)
            if isinstance(plan, dict):
                return plan
            return self._run_single_pass(champion, index, base_comments, base_y, plan)
        data = self._read(index, base_comments, base_y)
        self.timings["read"] = time.perf_counter() - started
        n = len(data.y)
        plan = self._plan(data.y, unseen, len(data.base_comments), champion_version)
        if isinstance(plan, dict):
            return plan
        n_eval, cv = plan, self.cv
        eval_idx = np.arange(n - n_eval, n)  # examples are sorted by label time, oldest first
        y_eval = data.y[eval_idx]
        if not (cv or self.full) and n + len(data.base_comments) <= _exact_max():
            self._reuse_settings(champion, champion_info)

        if not cv and n + len(data.base_comments) > _exact_max():
            self._progress("extracting features", 0.2)
            started = time.perf_counter()
            self.shared = _featurize(list(data.comments) + list(data.base_comments),
                                     np.concatenate([data.y, data.base_y]))
            self.timings["features"] = time.perf_counter() - started

        self._progress("scoring the champion", 0.3)
        champion_scores = None
        if champion is not None and self.shared is not None and champion.config == self.shared.config:
            champion_scores = _scores_featurized(champion, self.shared, eval_idx)
        elif champion is not None:
            champion_scores = _scores(champion, [data.comments[i] for i in eval_idx])

        final = None
        if self.record.get("judged_on_seen"):
            # The champion has been fitted on every judged label; a challenger fitted without them (a holdout, or
            # out of fold) would be judged against the champion's own training data and lose to it every time, so
            # the nightly refit could never replace a chain of quick updates. Judge like with like: the refit on
            # every label, scored on the same labels, which both models have seen.
            self._progress("training the new model on every label", 0.35)
            final = self._fit(data, np.arange(n), "final fit")
            self._progress("scoring the challenger", 0.6)
            challenger_scores = (_scores_featurized(final, self.shared, eval_idx) if self.shared is not None
                                 else _scores(final, [data.comments[i] for i in eval_idx]))
            plan = (f"the newest {n_eval} labels, seen by both: the refit on every label against the champion, "
                    "which was updated with them")
        elif cv:
            self._progress("cross-validating the challenger", 0.35)
            challenger_scores = self._cross_validated_scores(data, eval_idx)
            plan = f"{_folds(data.y)}-fold stratified cross-validation over {n} labels"
            if n_eval < n:  # scored out of fold on every label, judged on the ones the champion never saw
                plan += f", judged on the newest {n_eval} (those the champion has not seen)"
        else:
            self._progress("training the challenger on older labels", 0.35)
            train_idx = np.arange(0, n - n_eval)
            model = self._fit(data, train_idx, "holdout fit")
            self._progress("scoring the challenger", 0.6)
            challenger_scores = (_scores_featurized(model, self.shared, eval_idx) if self.shared is not None
                                 else _scores(model, [data.comments[i] for i in eval_idx]))
            plan = f"holdout of the newest {n_eval} labels (trained on the {n - n_eval} older)"
        self.record["evaluation"] = plan

        ok, why = self._gate(y_eval, challenger_scores, champion_scores)
        if not ok:
            return self._finish("reject", why)

        if final is None:
            self._progress("training the new model on every label", 0.7)
            final = self._fit(data, np.arange(n), "final fit")
        self.lease.check()
        self._progress("publishing", 0.95)
        trained_until = index.last_time
        return self._promote(final, trained_until, plan, why, updates_since_full=0)

    def _plan(self, y: np.ndarray, unseen: int, n_base: int, champion_version: str) -> int | dict:
        """How many of the newest labels the gate judges on (and whether by cross-validation, in self.cv), or the
        finished run record when there is nothing fair to judge. `unseen`: labels newer than the champion's fit."""
        n = len(y)
        counts = self.record["counts"] = {"labels": n, "spam": int(y.sum()), "ham": int(n - y.sum()), "base": n_base}
        unseen = min(n, unseen)
        if min(counts["spam"], counts["ham"]) < MIN_PER_CLASS:
            self._count_again(unseen)
            return self._finish("skip", f"need at least {MIN_PER_CLASS} spam and {MIN_PER_CLASS} ham labels; "
                                        f"have {counts['spam']} spam, {counts['ham']} ham")
        cv = self.cv = n < CV_BELOW
        n_eval = unseen if cv else min(unseen, math.ceil(HOLDOUT_FRACTION * n))
        counts["unseen_by_champion"] = unseen
        if n_eval < MIN_EVAL:
            self._count_again(unseen)
            return self._finish("skip", f"only {n_eval} labels newer than champion {champion_version}'s training "
                                        f"data; need {MIN_EVAL} to compare the two fairly")
        counts["eval"] = int(n_eval)
        return n_eval

    def _reuse_settings(self, champion, champion_info: dict) -> None:
        """A refit that is not a full one (the nightly refit, or one asked for with --full) fits with the serving
        model's own regularisation and column scaling when the champion was fitted the same way (the exact fit),
        instead of choosing them again by cross-validation: the choice is most of an exact fit's time (seconds
        against tens of seconds at a few thousand labels), and settings move slowly; a full refit chooses them
        afresh."""
        classifier = (getattr(champion, "meta", None) or {}).get("classifier") or {}
        if champion_info.get("kind") != "retrain" or classifier.get("type") != "LinearSVC" \
                or classifier.get("C") is None or "nb_mix" not in classifier:
            return
        self.C, self.nb_mix = float(classifier["C"]), classifier["nb_mix"]
        columns = "plain" if self.nb_mix is None else "NB-scaled"
        self.record["settings"] = (f"the serving model's (C {self.C:g}, {columns} columns); the nightly refit "
                                   "chooses them again")

    def _count_again(self, unseen: int) -> None:
        """A skipped run learned nothing from the labels the champion has not seen: they count towards the next
        automatic retrain again (the run set the counter to 0 as it started)."""
        if unseen > 0:
            self.redis.incrby(keys.RETRAIN_NEW_LABELS, int(unseen))

    def _run_single_pass(self, champion, index, base_comments: list, base_y: np.ndarray, n_eval: int) -> dict:
        """Many labels: one pass of SGD in which feature workers read and featurise every label once. The gate
        judges the pass's model as it stood before the newest labels; the published model is the same pass
        carried on over them (training.fitting.single_pass)."""
        from training import fitting
        from training.features import DEFAULT_CONFIG
        from training.labels import LabelBatch, connection_spec

        n, n_base = len(index.ids), len(base_comments)
        w_base = min(BASE_WEIGHT, n / n_base) if n_base else 0.0
        spec, ids = connection_spec(self.redis), index.ids

        def batch(positions: np.ndarray):
            labelled, base = positions[positions < n], positions[positions >= n] - n
            parts = []
            if len(labelled):
                parts.append(LabelBatch(spec, tuple(ids[i] for i in labelled)))
            if len(base):
                comments = tuple(base_comments[i] for i in base)
                parts.append(fitting.Items(comments, tuple(int(base_y[i]) for i in base), (w_base,) * len(base),
                                           tuple(_as_comment(c).site or "unknown" for c in comments)))
            return parts[0] if len(parts) == 1 else fitting.Joined(tuple(parts))

        def progress(stage: str, fraction: float) -> None:
            self.lease.check()
            self._progress(stage, 0.1 + 0.8 * fraction)

        older = np.concatenate([np.arange(n - n_eval), n + np.arange(n_base)])
        newest = np.arange(n - n_eval, n)
        y = np.concatenate([index.y, np.asarray(base_y, dtype=np.int8)])
        weights = np.concatenate([np.ones(n), np.full(n_base, w_base)])
        started = time.perf_counter()
        result = fitting.single_pass(batch, older, newest, y, DEFAULT_CONFIG, weights=weights, C=self.C,
                                     grid=_c_grid(), champion=_linear_parts(champion), progress=progress)
        self.timings["one pass"] = time.perf_counter() - started
        for stage, seconds in result.timings.items():
            if stage != "total":
                self.timings[f"one pass: {stage}"] = seconds
        self.record["counts"]["eval"] = int(len(result.y_eval))
        plan = (f"holdout of the newest {len(result.y_eval)} labels: one pass of SGD, judged as it stood after the "
                f"{n - n_eval} older labels, before it met them")
        self.record["evaluation"] = plan
        ok, why = self._gate(result.y_eval, result.challenger_scores, result.champion_scores)
        if not ok:
            return self._finish("reject", why)
        final = _assemble(result.final, result.details, result.counts, DEFAULT_CONFIG)
        self.lease.check()
        self._progress("publishing", 0.95)
        return self._promote(final, index.last_time, plan, why, updates_since_full=0)

    def _promote(self, model, trained_until: float, plan: str, why: str, updates_since_full: int) -> dict:
        meta = {"kind": "retrain", "mode": self.record["mode"], "trained_until": trained_until,
                "updates_since_full": updates_since_full, "counts": self.record["counts"],
                "metrics": self.record["metrics"], "evaluation": plan, "champion": self.record["champion_version"],
                "job_id": self.record["job_id"], "site": self.site}
        version = self.registry.publish(model, meta, promoted_by=self._by(), reason=why, promote=True,
                                        expected_current=self.record["champion_version"])
        self.record["challenger_version"] = version
        info = self.registry.get(version)
        if info["status"] != "promoted":
            return self._finish("reject", info["reason"])
        return self._finish("promote", why)

    def _gate(self, y_eval, challenger_scores, champion_scores, judge=None) -> tuple[bool, str]:
        challenger_m = self._metrics(y_eval, challenger_scores)
        champion_m = self._metrics(y_eval, champion_scores) if champion_scores is not None else None
        self.record["metrics"] = {"challenger": challenger_m, "champion": champion_m}
        if judge is None:
            ok, why = gate(challenger_m, champion_m, self.settings.gate_mcc_tolerance)
        else:
            ok, why = judge(challenger_m, champion_m)
        if not ok:
            self.registry.record_rejection({"version": None, "metrics": self.record["metrics"],
                                            "counts": self.record["counts"]}, by=self._by(), reason=why)
        return ok, why

    # ---- the incremental path ------------------------------------------------------------------------------------
    def _incremental_since(self, champion, champion_info: dict) -> float | None:
        """The champion's label cutoff when a few new labels can update it in place of a full retrain, else None.

        A full fit re-extracts features for every stored label, which at 100k labels takes minutes; the labels
        that arrived since the champion's fit are usually a few dozen. The full path still runs on the schedule,
        after MAX_UPDATES chained updates, for a starter champion, and when the new labels are too many.
        """
        from training.labels import LabelStore

        cutoff = champion_info.get("trained_until")
        if self.full or champion is None or cutoff is None or champion_info.get("kind") != "retrain":
            return None
        if int(champion_info.get("updates_since_full", 0)) >= MAX_UPDATES:
            return None
        since = float(np.nextafter(float(cutoff), math.inf))
        store = LabelStore(self.redis)
        total, new = store.count(self.site), store.count_since(since, self.site)
        if new > min(INCREMENTAL_MAX, INCREMENTAL_SHARE * total):
            return None
        if total <= self.settings.update_above_labels:
            self.record["incremental_declined"] = (
                f"{total} labels in all, not above WINNOW_UPDATE_ABOVE_LABELS ({self.settings.update_above_labels}): a "
                "refit on every label is quick at this size, and learns new labels better than an update")
            return None
        return since

    def _run_incremental(self, champion, champion_version: str, champion_info: dict, since: float) -> dict:
        from training.labels import LabelStore

        self.record["mode"] = "incremental"
        self._progress("reading the labels since the champion's fit", 0.05)
        started = time.perf_counter()
        rows = sorted(((r.labelled_at, r.comment, 1 if r.label == "spam" else 0)
                       for r in LabelStore(self.redis).export(site=self.site, since=since)), key=lambda r: r[0])
        self.timings["read"] = time.perf_counter() - started
        comments = [r[1] for r in rows]
        y = np.asarray([r[2] for r in rows], dtype=np.int8)
        n_new = len(y)
        counts = {"labels": int(LabelStore(self.redis).count(self.site)), "new": n_new, "spam_new": int(y.sum()),
                  "ham_new": int(n_new - y.sum()), "unseen_by_champion": n_new, "eval": n_new, "base": 0}
        self.record["counts"] = counts
        if n_new < MIN_EVAL:
            self._count_again(n_new)
            return self._finish("skip", f"only {n_new} labels newer than champion {champion_version}'s training "
                                        f"data; need {MIN_EVAL} to compare the two fairly")
        if min(counts["spam_new"], counts["ham_new"]) < MIN_PER_CLASS:
            # Updated on one kind of label alone (a spam wave), a model drifts towards calling everything that
            # kind, and cross-validation over those labels cannot see it: refit on every label instead.
            self.record["incremental_declined"] = (
                f"the {n_new} new labels hold {counts['spam_new']} spam and {counts['ham_new']} ham; an update "
                f"needs at least {MIN_PER_CLASS} of each, so every label is fitted again")
            return None
        self._progress("scoring the champion", 0.2)
        champion_scores = _scores(champion, comments)
        self._progress("cross-validating the updated challenger", 0.3)
        started = time.perf_counter()
        challenger_scores, folds = _updated_out_of_fold(champion, comments, y)
        self.timings["cross-validated updates"] = time.perf_counter() - started
        plan = (f"incremental update of {champion_version} with the {n_new} labels since its fit, judged by "
                f"{folds}-fold cross-validation over them")
        self.record["evaluation"] = plan
        ok, why = self._gate(y, challenger_scores, champion_scores)
        if not ok:
            return self._finish("reject", why)
        self._progress("judging the update on older labels", 0.7)
        started = time.perf_counter()
        older_comments, older_y = self._older_sample(since)
        champion_older = _scores(champion, older_comments) if len(older_y) else None
        older_seconds = time.perf_counter() - started
        self._progress("updating the champion with the new labels", 0.8)
        started = time.perf_counter()
        _update(champion, comments, y)
        self.timings["update"] = time.perf_counter() - started
        if champion_older is not None:
            # What the champion learned before must survive the update: on the labels it was fitted on, the update
            # may move a little, not drift (a wave of one kind of label pulls a model towards calling everything
            # that kind, which cross-validation over the wave cannot see).
            new_metrics = self.record["metrics"]
            started = time.perf_counter()
            older_scores = _scores(champion, older_comments)
            self.timings["older labels"] = older_seconds + time.perf_counter() - started
            ok, older_why = self._gate(older_y, older_scores, champion_older,
                                       judge=functools.partial(drift_gate, n=len(older_y)))
            self.record["metrics"] = {**new_metrics, "older": self.record["metrics"]}
            plan += f"; and on {len(older_y)} older labels it was fitted on"
            self.record["evaluation"] = plan
            if not ok:
                return self._finish("reject", older_why)
            why += "; " + older_why
        self.lease.check()
        self._progress("publishing", 0.95)
        return self._promote(champion, float(max(r[0] for r in rows)), plan, why,
                             updates_since_full=int(champion_info.get("updates_since_full", 0)) + 1)

    def _older_sample(self, since: float) -> tuple[list, np.ndarray]:
        """The newest labels of each kind from before `since`, up to REPLAY_PER_CLASS each (empty when a kind has
        fewer than MIN_PER_CLASS: nothing to judge a drift on)."""
        from training.labels import LabelStore

        store = LabelStore(self.redis)
        ids = {label: store.newest_before(since, label, REPLAY_PER_CLASS, self.site) for label in ("ham", "spam")}
        if min(len(v) for v in ids.values()) < MIN_PER_CLASS:
            return [], np.zeros(0, dtype=np.int8)
        comments, y, _ = store.training_examples(ids["ham"] + ids["spam"])
        return comments, y

    # ---- steps ---------------------------------------------------------------------------------------------------
    def _read(self, index, base_comments: list, base_y: np.ndarray) -> _Examples:
        from training.labels import LabelStore

        comments, y, found = LabelStore(self.redis).training_examples(index.ids)
        return _Examples(comments=comments, y=y, base_comments=list(base_comments),
                         base_y=np.asarray(base_y, dtype=np.int8))

    def _fit(self, data: _Examples, idx: np.ndarray, name: str):
        started = time.perf_counter()
        comments = [data.comments[i] for i in idx]
        y = data.y[idx]
        weights = None
        if len(data.base_comments):
            w_base = min(BASE_WEIGHT, len(idx) / len(data.base_comments))
            comments = comments + list(data.base_comments)
            y = np.concatenate([y, data.base_y])
            weights = np.concatenate([np.ones(len(idx)), np.full(len(data.base_comments), w_base)])
        if self.shared is not None:
            rows = np.concatenate([idx, len(data.y) + np.arange(len(data.base_comments))])
            full_w = np.ones(len(data.y) + len(data.base_comments))
            if weights is not None:
                full_w[rows] = weights
            model = _train_featurized(self.shared, rows, full_w, C=self.C)
        else:
            if self.C is None and len(y) > C_SEARCH_SAMPLE:
                self.C = self._choose_c(comments, y, weights)
            model = _train(comments, y, weights, C=self.C, nb_mix=self.nb_mix)
        if self.C is None and not self.cv:
            # One choice of settings serves both fits of a run: the final fit only adds the newest labels.
            self.C = _model_c(model)
            classifier = (getattr(model, "meta", None) or {}).get("classifier") or {}
            if "nb_mix" in classifier:  # the exact fit's column scaling (the many-labels fit has none)
                self.nb_mix = classifier["nb_mix"]
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
        self.lease.check()
        return model

    def _choose_c(self, comments, y, weights) -> float | None:
        # The model core picks C by a 5x5 grid of fits over all the data; on a large set that grid costs more than
        # everything else, and a stratified sample picks the same order of magnitude.
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(y), size=C_SEARCH_SAMPLE, replace=False))
        sample = _train([comments[i] for i in idx], y[idx], None if weights is None else weights[idx])
        self.timings["choose C on a sample"] = time.perf_counter() - started
        return _model_c(sample)

    def _cross_validated_scores(self, data: _Examples, eval_idx: np.ndarray) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold

        folds = _folds(data.y)
        scores = np.full(len(data.y), np.nan)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
        wanted = np.zeros(len(data.y), dtype=bool)
        wanted[eval_idx] = True
        for k, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(data.y)), data.y)):
            test_idx = test_idx[wanted[test_idx]]
            if not len(test_idx):
                continue
            self._progress(f"cross-validating the challenger (fold {k + 1} of {folds})", 0.35 + 0.3 * k / folds)
            model = self._fit(data, train_idx, "cross-validation fits")
            scores[test_idx] = _scores(model, [data.comments[i] for i in test_idx])
        return scores[eval_idx]

    def _metrics(self, y_true: np.ndarray, scores: np.ndarray) -> dict:
        from training.evaluation import curves, metrics

        # Scalars only: curves would make every run record and version's metadata kilobytes long.
        m = {k: _plain(v) for k, v in metrics(y_true, scores).items() if not isinstance(v, (list, tuple, dict))}
        flagged = scores >= self.settings.spam_threshold
        m["ham_flagged"] = int((flagged & (y_true == 0)).sum())
        m["spam_flagged"] = int((flagged & (y_true == 1)).sum())
        m["spam_threshold"] = self.settings.spam_threshold
        m.update(curves(y_true, scores, self.settings.spam_threshold))  # drawn by the console's Models page
        return m

    def _finish(self, decision: str, why: str) -> dict:
        finished = time.time()
        self.record.update(decision=decision, why=why, finished_at=finished,
                           duration_s=round(finished - self.started, 3),
                           timings_s={k: round(v, 3) for k, v in self.timings.items()})
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(keys.RETRAIN_RUNS, json.dumps(self.record, default=_plain))
            pipe.ltrim(keys.RETRAIN_RUNS, 0, RUNS_KEPT - 1)
            pipe.execute()
        self._progress(f"done: {decision}", 1.0, decision=decision, why=why)
        log.info("retrain %s: %s (%s)", self.record.get("job_id") or "direct", decision, why)
        return self.record

    def _by(self) -> str:
        who = self.requested_by or "retrain"
        return f"{who} via retrain ({self.reason})"

    def _progress(self, stage: str, fraction: float, **extra) -> None:
        _progress(self.job, stage, fraction, **extra)


def gate(challenger: dict, champion: dict | None, tolerance: float) -> tuple[bool, str]:
    """Promote only a challenger that is not worse: MCC within `tolerance`, no more ham flagged as spam and, when
    the judged labels are all spam, no less of it caught."""
    if champion is None:
        return True, "no verifiable champion to compare with"
    c_mcc, k_mcc = float(challenger["mcc"]), float(champion["mcc"])
    if c_mcc < k_mcc - tolerance:
        return False, (f"challenger MCC {c_mcc:.4f} is below champion MCC {k_mcc:.4f} by more than the "
                       f"tolerance {tolerance}")
    if challenger["ham_flagged"] > champion["ham_flagged"]:
        return False, (f"challenger flags {challenger['ham_flagged']} ham comments as spam at the serving threshold "
                       f"{challenger['spam_threshold']}, champion {champion['ham_flagged']}")
    confusion = challenger.get("confusion") or {}
    if confusion and confusion["tn"] + confusion["fp"] == 0 and challenger["spam_flagged"] < champion["spam_flagged"]:
        # Labels of one class give every model an MCC of 0; on spam alone, what counts is how much is caught.
        return False, (f"the judged labels are all spam, where MCC tells nothing: challenger catches "
                       f"{challenger['spam_flagged']} of {confusion['tp'] + confusion['fn']} at the serving threshold "
                       f"{challenger['spam_threshold']}, champion {champion['spam_flagged']}")
    if confusion and confusion["tn"] + confusion["fp"] == 0:
        return True, (f"the judged labels are all spam, where MCC tells nothing: challenger catches "
                      f"{challenger['spam_flagged']} of {confusion['tp'] + confusion['fn']} at the serving threshold "
                      f"{challenger['spam_threshold']}, champion {champion['spam_flagged']}")
    if confusion and confusion["tp"] + confusion["fn"] == 0:
        return True, (f"the judged labels are all ham, where MCC tells nothing: challenger flags "
                      f"{challenger['ham_flagged']} of {confusion['tn'] + confusion['fp']} as spam at the serving "
                      f"threshold {challenger['spam_threshold']}, champion {champion['ham_flagged']}")
    return True, (f"challenger MCC {c_mcc:.4f} vs champion {k_mcc:.4f} (tolerance {tolerance}); ham flagged "
                  f"{challenger['ham_flagged']} vs {champion['ham_flagged']}")


def drift_gate(challenger: dict, champion: dict, n: int) -> tuple[bool, str]:
    """An update judged on older labels: refused when it loses more than DRIFT_MCC_TOLERANCE of MCC there, or flags
    more than DRIFT_HAM_SHARE of the older ham (at least one comment) beyond what the champion flags."""
    c_mcc, k_mcc = float(challenger["mcc"]), float(champion["mcc"])
    confusion = champion.get("confusion") or {}
    older_ham = int(confusion.get("tn", 0)) + int(confusion.get("fp", 0))
    allowed = champion["ham_flagged"] + max(1, math.floor(DRIFT_HAM_SHARE * older_ham))
    if c_mcc < k_mcc - DRIFT_MCC_TOLERANCE:
        return False, (f"on {n} older labels the update's MCC {c_mcc:.4f} is below the champion's {k_mcc:.4f} by "
                       f"more than {DRIFT_MCC_TOLERANCE}: it would unlearn what came before")
    if challenger["ham_flagged"] > allowed:
        return False, (f"on {n} older labels the update flags {challenger['ham_flagged']} of {older_ham} ham as spam "
                       f"at the serving threshold, the champion {champion['ham_flagged']}: it would unlearn what "
                       "came before")
    return True, (f"on {n} older labels: MCC {c_mcc:.4f} vs {k_mcc:.4f}, ham flagged {challenger['ham_flagged']} vs "
                  f"{champion['ham_flagged']}")


def _updated_out_of_fold(champion, comments: list, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Scores of each new label by a copy of the champion updated with the other new labels only."""
    from sklearn.model_selection import KFold, StratifiedKFold

    smallest = int(min(y.sum(), len(y) - y.sum()))
    if smallest >= 2:
        folds = min(CV_FOLDS, smallest)
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
    else:
        folds = min(CV_FOLDS, len(y))
        splits = KFold(n_splits=folds, shuffle=True, random_state=0).split(np.zeros(len(y)))
    scores = np.zeros(len(y))
    for train_idx, test_idx in splits:
        model = copy.deepcopy(champion)
        _update(model, [comments[i] for i in train_idx], y[train_idx])
        scores[test_idx] = _scores(model, [comments[i] for i in test_idx])
    return scores, folds


def _folds(y: np.ndarray) -> int:
    smallest = int(min(y.sum(), len(y) - y.sum()))
    return max(2, min(CV_FOLDS, smallest))


def _progress(job: Job | None, stage: str, fraction: float, **extra) -> None:
    if job is None:
        return
    job.meta.update(stage=stage, progress=round(float(fraction), 3), **extra)
    try:
        job.save_meta()
    except redis_lib.RedisError as exc:  # progress is a courtesy; the run itself must go on
        log.debug("could not save progress: %s", exc)


def _plain(value):
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- calls into the model core (kept together so its API shows in one place) ---------------------------------------
def _train(comments: Sequence, y: np.ndarray, sample_weight: np.ndarray | None, C: float | None = None,
           nb_mix: float | None | str = "auto"):
    from training.model import train

    return train(comments, np.asarray(y, dtype=np.int64), sample_weight=sample_weight, C=C, nb_mix=nb_mix)


def _exact_max() -> int:
    from training.fitting import EXACT_MAX

    return EXACT_MAX


def _in_memory_max() -> int:
    from training.fitting import IN_MEMORY_MAX

    return IN_MEMORY_MAX


def _c_grid() -> tuple:
    from training.model import C_GRID

    return C_GRID


def _label_index(redis: redis_lib.Redis, site: str | None, newer_than: float | None):
    from training.labels import LabelStore

    return LabelStore(redis).training_index(site, newer_than)


def _as_comment(item):
    from training.features import as_comment

    return as_comment(item)


def _linear_parts(model):
    """(calibrated classifier, feature configuration) of a model, for scoring featurised rows; None for none."""
    return None if model is None else (model.pipeline.named_steps["classifier"], model.config)


def _assemble(calibrated, details: dict, counts, config):
    """A Model around a classifier fitted outside training.model, with the same metadata a fit there records;
    `counts` maps (source, label) to rows."""
    from training.features import Featurizer
    from training.model import _model

    sources = [source for (source, _), k in counts.items() for _ in range(k)]
    y = np.fromiter((label for (_, label), k in counts.items() for _ in range(k)), dtype=np.int64, count=len(sources))
    return _model(Featurizer(config), calibrated, details, y, sources, config)


def _featurize(comments: Sequence, y: np.ndarray):
    from training.features import DEFAULT_CONFIG
    from training.fitting import Featurized

    return Featurized(comments, np.asarray(y, dtype=np.int64), DEFAULT_CONFIG)


def _train_featurized(data, rows: np.ndarray, sample_weight: np.ndarray, C: float | None = None):
    from training.model import train_featurized

    return train_featurized(data, rows, sample_weight, C=C)


def _scores_featurized(model, data, rows: np.ndarray) -> np.ndarray:
    from training.fitting import predict_proba

    return predict_proba(model.pipeline.named_steps["classifier"], data, rows)


def _update(model, comments: Sequence, y: np.ndarray) -> None:
    model.partial_fit(comments, np.asarray(y, dtype=np.int64), epochs=UPDATE_EPOCHS,
                      learning_rate=UPDATE_LEARNING_RATE)


def _model_c(model) -> float | None:
    c = ((getattr(model, "meta", None) or {}).get("classifier") or {}).get("C")
    return float(c) if c is not None else None


def _scores(model, comments: Sequence) -> np.ndarray:
    proba = np.asarray(model.predict_proba(list(comments)), dtype=np.float64)
    return proba[:, 1] if proba.ndim == 2 else proba


def _starter_corpora():
    from training import starter

    try:
        comments, labels = starter.corpora()
    except FileNotFoundError as exc:
        log.info("starter corpora not available (%s); training on the site's labels alone", exc)
        return [], np.zeros(0, dtype=np.int8)
    return list(comments), np.asarray([1 if label in ("spam", 1, True) else 0 for label in labels], dtype=np.int8)


class _Lease:
    """The retrain lock with a heartbeat thread extending it, so a dead worker frees it within `seconds`."""

    def __init__(self, redis: redis_lib.Redis, seconds: int):
        self.seconds = max(2, int(seconds))
        self.lock = redis.lock(keys.RETRAIN_LOCK, timeout=self.seconds, thread_local=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def acquire(self, wait: float) -> bool:
        if not self.lock.acquire(blocking=True, blocking_timeout=wait):
            return False
        self._thread = threading.Thread(target=self._beat, name="winnow-retrain-lease", daemon=True)
        self._thread.start()
        return True

    def check(self) -> None:
        if self.lost or not self.lock.owned():
            self.lost = True
            raise LostLock("the retrain lock expired during the run; not promoting")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.lock.release()
        except redis_lib.exceptions.LockError:
            pass

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                self.lock.extend(self.seconds, replace_ttl=True)
            except redis_lib.exceptions.LockError:
                self.lost = True
                return
            except redis_lib.RedisError as exc:
                log.warning("could not extend the retrain lock: %s", exc)
