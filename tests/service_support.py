"""Helpers for the service tests: the SERVICE test database, a small trained model, and an app built on them."""
from __future__ import annotations

import functools
import os
import re
import time
from pathlib import Path

import pytest
import redis

from service.launcher import EmbeddedRedis
from training.schema import Comment

SERVICE_DB = 12

SPAM = [
    "Buy cheap pills now http://pills.example.com best price",
    "Click here to win a free iPhone http://win.example.net",
    "Check out my channel and subscribe http://spam.example.org",
    "Cheap viagra online, no prescription http://rx.example.com",
    "Earn $5000 a week from home, click http://money.example.biz",
    "FREE gift card!!! visit http://gift.example.info now",
    "make money fast click this link http://fast.example.com",
    "subscribe to my channel for free followers http://subs.example.com",
]
HAM = [
    "Thanks for the clear explanation of the migration steps.",
    "I tried this on Debian and it worked after installing the headers.",
    "Great post, the part about indexes helped me a lot.",
    "Could you write a follow-up about backups?",
    "I disagree with the second point, caching is not always faster.",
    "This song reminds me of my childhood, lovely.",
    "The benchmark numbers look plausible, did you pin the CPU frequency?",
    "Nice photos of the mountains, where was the last one taken?",
]


def service_redis_url() -> str:
    """The SERVICE database on the test Redis (the host from WINNOW_TEST_REDIS_URL when set)."""
    base = os.environ.get("WINNOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    return re.sub(r"/\d+$", "", base) + f"/{SERVICE_DB}"


def service_redis() -> redis.Redis:
    client = redis.Redis.from_url(service_redis_url())
    client.ping()
    return client


@pytest.fixture()
def service_db():
    """A client on the SERVICE test database, flushed before and after the test (import it into a test module)."""
    client = service_redis()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@functools.lru_cache(maxsize=1)
def small_model():
    """A real model trained on a handful of comments; C fixed and fewer hash buckets so it trains in a blink."""
    from training.features import FeatureConfig
    from training.model import train

    comments = [Comment(content=t) for t in SPAM + HAM]
    labels = ["spam"] * len(SPAM) + ["ham"] * len(HAM)
    return train(comments, labels, C=1.0, config=FeatureConfig(n_features=2**16))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis(EmbeddedRedis):
    """A redis-server of our own on a free port, configured as `make run` configures its embedded one (AOF with
    appendfsync always); a test may kill it like a crash and start it again (same port, same data)."""

    def __init__(self, tmp_path):
        super().__init__(Path(tmp_path), port=free_port())

    def start(self) -> "PrivateRedis":
        super().start()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # a crash, not a shutdown: the AOF must already hold every acknowledged write
            self.process.wait(10)


def wait_until(predicate, timeout: float = 5.0, step: float = 0.01) -> bool:
    """True as soon as predicate() is, False once `timeout` seconds have passed without it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def end_process(process, log, store: PrivateRedis) -> None:
    """A test's process killed if it still runs, its log closed and its private Redis stopped."""
    if process.poll() is None:
        process.kill()
        process.wait()
    log.close()
    store.stop()
