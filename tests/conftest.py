"""Shared fixtures: a real Redis (own database, flushed), the shared corpora, and system-package checks."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("WINNOW_SHARED_DIR", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"


def _suite_redis_url() -> str:
    """WINNOW_TEST_REDIS_URL when set; otherwise a redis-server of the suite's own, on a free port, without
    persistence, for this session: tests flush whole databases (5, 9, 10, 11, 12, 13), so they never touch a Redis
    someone may keep data in unless told to."""
    configured = os.environ.get("WINNOW_TEST_REDIS_URL")
    if configured:
        return configured
    from service.launcher import EmbeddedRedis, free_port

    class ScratchRedis(EmbeddedRedis):
        def command(self, binary: str) -> list[str]:
            cmd = super().command(binary)
            cmd[cmd.index("--appendonly") + 1] = "no"  # scratch data: no disk writes to wait for
            # Gone with this process however it ends: atexit does not run when a run is killed (a timeout).
            setpriv = shutil.which("setpriv")
            return [setpriv, "--pdeathsig", "TERM", *cmd] if setpriv else cmd

    data_dir = Path(tempfile.mkdtemp(prefix="winnow-test-redis-"))
    server = ScratchRedis(data_dir, port=free_port())
    server.start()

    def stop() -> None:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    atexit.register(stop)
    url = f"redis://{server.host}:{server.port}/13"
    os.environ["WINNOW_TEST_REDIS_URL"] = url  # for the modules that read it themselves, and for subprocesses
    return url


TEST_REDIS_URL = _suite_redis_url()


def require_datasets() -> Path:
    """The shared corpora folder, or a skip that says why (a user's fresh clone has no ../shared)."""
    if not (DATASETS / "youtube" / "youtube.jsonl").exists():
        pytest.skip(f"shared datasets not found at {DATASETS}: these tests need ../shared/datasets beside the repo")
    return DATASETS


def require_program(name: str) -> str:
    """Path of a system program; a clear skip without it, but a failure under CI (.ci/run installs it)."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian package: apt-get install {name}); .ci/run installs it"
    if os.environ.get("WINNOW_REQUIRE_SYSTEM_DEPS"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def datasets() -> Path:
    return require_datasets()


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis at {TEST_REDIS_URL}: start it, or unset WINNOW_TEST_REDIS_URL for a private one")
    return TEST_REDIS_URL


@pytest.fixture()
def redis_client(redis_url):
    """A client on the test database, flushed before and after each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _quiet_request_log_at_exit():
    """Request lines still buffered when the suite ends would print after pytest's summary: drop them."""
    yield
    from service import logs

    handler = logs._handler
    if handler is not None:
        handler._pending.clear()
        handler.stream = open(os.devnull, "w")
