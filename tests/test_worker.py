"""The worker process (python -m training.worker): rq's worker that outlives a Redis outage, even one that comes
while it runs a job (`rq worker` quits there, and under honcho one process exiting stops the web and the clock)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from rq import Queue

from tests.service_support import PrivateRedis, end_process, wait_until

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "worker-test"


def uses_redis(url: str, seconds: float) -> None:
    """A job that talks to Redis as a retrain does (its lock, its progress): it fails when Redis goes away."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.ping()
        time.sleep(0.05)


def _finished(url: str, job_id: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return Queue(QUEUE, connection=client).fetch_job(job_id).get_status() == "finished"
    except (redis.RedisError, AttributeError):
        return False
    finally:
        client.close()


def _enqueue(url: str, func, *args) -> str:
    client = redis.Redis.from_url(url)
    try:
        return Queue(QUEUE, connection=client).enqueue(func, *args).id
    finally:
        client.close()


def _start_worker(tmp_path: Path):
    """A private Redis and `python -m training.worker` on it, logging to a file."""
    store = PrivateRedis(tmp_path / "redis").start()
    env = dict(os.environ, REDIS_URL=store.url, PYTHONUNBUFFERED="1", WINNOW_SECRET_KEY="test-secret",
               WINNOW_DATA_DIR=str(tmp_path / "var"))
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "training.worker", QUEUE], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    return store, process, log, log_path


def test_the_worker_survives_a_redis_outage_during_a_job_and_stops_cleanly(tmp_path):
    store, process, log, log_path = _start_worker(tmp_path)
    try:
        first = _enqueue(store.url, time.sleep, 0.1)
        assert wait_until(lambda: _finished(store.url, first), 30, 0.1), log_path.read_text()
        _enqueue(store.url, uses_redis, store.url, 30)
        assert wait_until(lambda: "uses_redis" in log_path.read_text(), 15, 0.1), log_path.read_text()
        store.stop()  # Redis crashes while the worker waits for its horse: `rq worker` would quit here
        time.sleep(4)
        assert process.poll() is None, log_path.read_text()
        store.start()  # same port, same data
        after = _enqueue(store.url, time.sleep, 0.1)
        assert wait_until(lambda: _finished(store.url, after), 60, 0.1), log_path.read_text()
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log_path.read_text()
        assert "the worker stopped" in log_path.read_text()
    finally:
        end_process(process, log, store)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_a_stop_during_a_job_while_redis_is_away_ends_the_job_too(tmp_path):
    """SIGTERM (honcho's Ctrl-C) while a retrain runs and Redis is down: the worker exits 0 and takes the job's
    process with it. That process has a process group of its own, so nothing else would ever stop it."""
    store, process, log, log_path = _start_worker(tmp_path)
    children: list[int] = []
    try:
        _enqueue(store.url, time.sleep, 120)
        assert wait_until(lambda: "sleep" in log_path.read_text(), 30, 0.1), log_path.read_text()
        assert wait_until(lambda: len(_children(process.pid)) >= 2, 10, 0.1)  # the scheduler and the job
        children = _children(process.pid)
        store.stop()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()
        assert wait_until(lambda: not [c for c in children if Path(f"/proc/{c}").exists()], 10, 0.1), (
            children, log_path.read_text())
    finally:
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        end_process(process, log, store)
