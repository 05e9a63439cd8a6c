"""The Procfile's `worker` process: rq's worker (with its scheduler), started again when Redis goes away instead of
exiting.

`rq worker` quits when Redis fails while it runs a job (rq reads the job's status from Redis while it waits for the
work horse and does not expect that read to fail: "found an unhandled exception, quitting...") and when a command
times out. Under honcho (`make run`) one process ending stops them all, so a Redis restart during a retrain took
the web and the clock down with the worker; on a machine of its own a worker that quit ran no retrain again until
someone restarted it. This runs the same rq Worker and, when it stops for anything but SIGTERM or Ctrl-C, waits
(1 s, doubling to 30 s) and starts a fresh one. A retrain the old worker's horse was running is continued like any
run whose worker died (the clock's recovery check, or the next trigger).

    python -m training.worker [QUEUE]     (REDIS_URL names the Redis; QUEUE defaults to WINNOW_QUEUE_NAME)
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import redis
from rq import Worker
from rq.exceptions import StopRequested

from training.settings import Settings

log = logging.getLogger("winnow.worker")

MAX_BACKOFF_SECONDS = 30.0
# rq starts its scheduler again (it dies with a Redis outage) only in its maintenance pass, every 10 minutes by
# default; the scheduler runs the retries of a failed retrain (10, 30 and 60 s later), so look every minute.
MAINTENANCE_SECONDS = 60


_STOP = threading.Event()  # set by SIGTERM or Ctrl-C outside rq's own handling


def _stop(signum, frame) -> None:
    _STOP.set()


def _stopped_on_request(worker: Worker | None) -> bool:
    # rq notes the time of a SIGTERM/SIGINT (warm shutdown) whether it stopped at once or after the running job.
    return _STOP.is_set() or worker is not None and (getattr(worker, "_stop_requested", False)
                                                      or getattr(worker, "_shutdown_requested_date", None) is not None)


def _clean_up(worker: Worker | None) -> None:
    """What rq's teardown leaves behind when Redis fails under it (it leaves the registry first, and stops there):
    the horse of the job it was running (in a process group of its own, so honcho's stop never reaches it), its
    scheduler process and its pubsub thread, which would otherwise live on, one more of each per outage. Each step
    is tried whatever the others do; a stop asked for meanwhile is only noted (see _stop)."""
    if worker is None:
        return
    steps = []
    if getattr(worker, "horse_pid", 0):
        steps.append(("the job's horse", lambda: (worker.kill_horse(), worker.wait_for_horse())))
    scheduler = getattr(worker, "scheduler", None)
    if scheduler is not None and scheduler._process is not None and scheduler._process.is_alive():
        steps.append(("the scheduler", worker.stop_scheduler))
    thread = getattr(worker, "pubsub_thread", None)
    if thread is not None and thread.is_alive():
        # Not worker.unsubscribe(): it tells Redis first, and with Redis away it stops there, the thread running.
        steps.append(("the pubsub thread", lambda: (thread.stop(), thread.join(timeout=1), worker.pubsub.close())))
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # already gone, or Redis refusing the goodbye
            log.debug("could not end %s of the old worker: %s", what, exc)


def run(redis_url: str, queue: str, *, max_backoff: float = MAX_BACKOFF_SECONDS,
        worker_class: type[Worker] = Worker) -> int:
    backoff = 1.0
    while True:
        started = time.monotonic()
        worker: Worker | None = None
        why = "it quit"
        try:
            connection = redis.Redis.from_url(redis_url, socket_connect_timeout=5, health_check_interval=30)
            worker = worker_class([queue], connection=connection, maintenance_interval=MAINTENANCE_SECONDS)
            worker.work(with_scheduler=True, logging_level="INFO")
        except (StopRequested, KeyboardInterrupt):
            _STOP.set()
        except redis.RedisError as exc:  # starting, or leaving rq's registry, while Redis is away
            why = f"Redis: {exc}"
        finally:
            # rq's handlers name the old worker: from here a signal only asks this loop to stop, after the clean-up.
            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            _clean_up(worker)
        if _stopped_on_request(worker):
            log.info("the worker stopped on request")
            return 0
        if time.monotonic() - started > 2 * max_backoff:
            backoff = 1.0  # it ran a good while: this is a new outage
        log.warning("the worker stopped (%s); starting a new one in %.0f s", why, backoff)
        if _STOP.wait(backoff):
            return 0
        backoff = min(max_backoff, backoff * 2)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.worker [QUEUE]`."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"bad settings: {exc}", file=sys.stderr)
        return 2
    return run(settings.redis_url, args[0] if args else settings.queue_name)


if __name__ == "__main__":
    sys.exit(main())
