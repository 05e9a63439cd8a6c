"""The learning loop with real processes: gunicorn web servers, `rq worker`, and a private redis-server.

Labels go in through the HTTP API, a retrain runs on the worker, and every web worker serves the promoted model
within seconds; a worker killed mid-training loses nothing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from bench.loop_data import campaign, generic
from tests.conftest import ROOT, require_program
from training.apikeys import KeyStore
from training.labels import LabelStore
from training.model import train
from training.registry import Registry
from training.settings import Settings

BIN = Path(sys.executable).parent
SITE = "https://blog.example.org"
SECRET = "e2e-loop-secret"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, redis.RedisError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Loop:
    """A private Redis plus the processes of one deployment, all stopped at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        port = _free_port()
        self.redis_proc = self._spawn([require_program("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(tmp)], "redis")
        self.url = f"redis://127.0.0.1:{port}/1"
        self.redis = redis.Redis.from_url(self.url)
        _wait(lambda: self.redis.ping(), 10, "redis-server")
        self.env = {**os.environ, "WINNOW_REDIS_URL": self.url, "REDIS_URL": self.url, "WINNOW_SECRET_KEY": SECRET,
                    "WINNOW_DATA_DIR": str(tmp / "var"), "WINNOW_MODELS_DIR": str(tmp / "models"),
                    "WINNOW_MODEL_POLL_SECONDS": "0.2", "WINNOW_RETRAIN_LOCK_SECONDS": "3",
                    "WINNOW_RETRAIN_AFTER_LABELS": "0", "WINNOW_RETRAIN_AFTER_OVERTURNS": "0",
                    "PYTHONUNBUFFERED": "1"}
        self.settings = Settings.from_env(self.env)
        keys = KeyStore(self.redis)
        self.site_key, _ = keys.create(SITE, "site", "e2e site")
        self.admin_key, _ = keys.create("", "admin", "e2e admin")
        self.moderator_key, _ = keys.create(SITE, "moderator", "e2e moderator")

    def _spawn(self, argv, name) -> subprocess.Popen:
        with open(self.tmp / f"{name}-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=getattr(self, "env", None), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def web(self, workers: int = 2) -> str:
        port = _free_port()
        self._spawn([str(BIN / "gunicorn"), "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
                     "--graceful-timeout", "2", "service.app:create_app()"], f"web-{port}")
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{base}/api/v1/models", headers=self.auth(self.admin_key),
                                timeout=2).status_code == 200, 60, f"gunicorn on {port}", 0.2)
        return base

    def worker(self) -> subprocess.Popen:
        return self._spawn([str(BIN / "rq"), "worker", "--url", self.url, "--with-scheduler",
                            self.settings.queue_name], "worker")

    @staticmethod
    def auth(key: str) -> dict:
        return {"Authorization": f"Bearer {key}"}

    def check(self, base: str, comment) -> dict:
        resp = httpx.post(f"{base}/api/v1/check", json=comment.to_dict(), headers=self.auth(self.site_key),
                          timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def label(self, base: str, rows) -> int:
        stored = 0
        rows = list(rows)
        for start in range(0, len(rows), 100):
            items = [{**c.to_dict(), "label": label} for c, label in rows[start:start + 100]]
            resp = httpx.post(f"{base}/api/v1/labels", json={"items": items}, headers=self.auth(self.moderator_key),
                              timeout=30)
            assert resp.status_code == 201, resp.text
            stored += resp.json()["stored"]
        return stored

    def retrain(self, base: str) -> str:
        resp = httpx.post(f"{base}/api/v1/models/retrain", json={"reason": "e2e"}, headers=self.auth(self.admin_key),
                          timeout=10)
        assert resp.status_code == 202, resp.text
        return resp.json()["job_id"]

    def job(self, base: str, job_id: str) -> dict:
        resp = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=self.auth(self.admin_key), timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def current(self) -> str | None:
        return Registry.from_settings(self.redis, self.settings).current_version()

    def close(self):
        # Newest first, each waited for, so Redis goes last and nothing logs a refused connection on the way out.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.redis.close()


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child] + _descendants(child)
    return found


def _kill_hard(pid: int) -> None:
    """SIGKILL a worker and everything it forked, as a machine dying would: rq's work horse runs in its own
    process group, so killing the worker's group alone would leave the horse training."""
    family = _descendants(pid)
    for victim in [pid] + family:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def everyday_model():
    """The champion the tests start from: knows link spam, has never seen the made-up campaign."""
    rows = list(generic(200, seed=400))
    return train([c for c, _ in rows], [label for _, label in rows])


@pytest.fixture()
def loop(tmp_path, everyday_model):
    deployment = Loop(tmp_path)
    Registry.from_settings(deployment.redis, deployment.settings).publish(
        everyday_model, {"kind": "starter"}, promoted_by="e2e", reason="the tests' starting champion", promote=True)
    yield deployment
    deployment.close()


def _served_everywhere(loop: Loop, bases: list[str], version: str, probe, tries: int = 8) -> bool:
    # Several requests per server, so each of its workers has answered at least once with high probability.
    return all(loop.check(base, probe)["model_version"] == version for base in bases for _ in range(tries))


def test_labels_teach_the_served_model(loop):
    base = loop.web()
    loop.worker()
    starter_version = loop.current()
    probes = [c for c, label in campaign(40, seed=501) if label == "spam"][:8]
    hams = [c for c, label in campaign(40, seed=501) if label == "ham"][:8]
    before = [loop.check(base, c) for c in probes]
    assert {r["model_version"] for r in before} == {starter_version}

    assert loop.label(base, campaign(300, seed=502)) == 300
    job_id = loop.retrain(base)
    stages = set()

    def finished():
        status = loop.job(base, job_id)
        stages.add(status["stage"])
        assert status["status"] != "failed", status
        return status if status["status"] == "finished" else None

    status = _wait(finished, 120, f"retrain {job_id}", 0.2)
    result = status["result"]
    assert result["decision"] == "promote", result
    assert any(s and "training" in s for s in stages) or any(s and "cross" in s for s in stages)
    new = result["challenger_version"]
    promoted_at = time.monotonic()
    _wait(lambda: _served_everywhere(loop, [base], new, probes[0]), 5, f"{new} served")
    assert time.monotonic() - promoted_at < 5

    after = [loop.check(base, c) for c in probes]
    ham_after = [loop.check(base, c) for c in hams]
    assert sum(a["score"] for a in after) / len(after) > sum(b["score"] for b in before) / len(before) + 0.3
    assert all(a["verdict"] == "spam" for a in after), [a["score"] for a in after]
    assert all(h["verdict"] == "ham" for h in ham_after), [h["score"] for h in ham_after]

    listing = httpx.get(f"{base}/api/v1/models", headers=loop.auth(loop.admin_key), timeout=10).json()
    assert listing["current"] == new and listing["versions"][0]["serving"]
    assert listing["runs"][0]["decision"] == "promote"


def test_two_web_servers_switch_within_two_seconds(loop):
    bases = [loop.web(), loop.web()]
    first = loop.current()
    probe = next(campaign(2, seed=601, start=1))[0]
    assert _served_everywhere(loop, bases, first, probe)

    registry = Registry.from_settings(loop.redis, loop.settings)
    model = registry.load(first)
    new = registry.publish(model, {"kind": "e2e"}, promoted_by="e2e", reason="switch test", promote=True)
    started = time.monotonic()
    _wait(lambda: _served_everywhere(loop, bases, new, probe, tries=4), 2.0, f"both servers on {new}", 0.02)
    switched = time.monotonic() - started
    assert switched <= 2.0

    resp = httpx.post(f"{bases[1]}/api/v1/models/rollback", json={}, headers=loop.auth(loop.admin_key), timeout=10)
    assert resp.status_code == 200 and resp.json()["version"] == first
    _wait(lambda: _served_everywhere(loop, bases, first, probe, tries=4), 2.0, f"both servers back on {first}", 0.02)


def test_worker_killed_mid_training_loses_nothing(loop):
    base = loop.web(workers=1)
    worker = loop.worker()
    champion = loop.current()
    n_labels = loop.label(base, campaign(600, seed=701))
    job_id = loop.retrain(base)

    def training():
        status = loop.job(base, job_id)
        return status if status["stage"] and "training" in status["stage"] else None

    _wait(training, 60, "the worker to start training", 0.02)
    _kill_hard(worker.pid)
    worker.wait(timeout=10)

    probe = next(campaign(2, seed=702, start=1))[0]
    assert loop.check(base, probe)["model_version"] == champion
    assert loop.current() == champion
    assert LabelStore(loop.redis).count() == n_labels
    assert loop.job(base, job_id)["status"] == "started"  # the dead worker's job, not yet noticed

    loop.worker()
    # The next trigger notices the abandoned run (its lock lease ran out) and continues it as a new job, which
    # the old job's status names.
    old = _wait(lambda: loop.retrain(base) and (s := loop.job(base, job_id))["status"] == "failed" and s, 30,
                "the abandoned retrain to be continued", 0.5)
    successor = old["error"].rsplit("continued as ", 1)[1].strip()
    assert successor.startswith("retrain-") and successor != job_id
    status = _wait(lambda: (s := loop.job(base, successor))["status"] == "finished" and s, 180,
                   f"retrain {successor} on the new worker", 0.2)
    assert status["result"]["decision"] == "promote", status["result"]
    assert status["result"]["counts"]["labels"] == n_labels
    new = status["result"]["challenger_version"]
    _wait(lambda: loop.check(base, probe)["model_version"] == new, 5, f"{new} served")
    assert LabelStore(loop.redis).count() == n_labels
