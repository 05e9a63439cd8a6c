"""training.threads.ProcessThread: one background thread per process, started again in a forked child or after it
died, with the owner told when it inherited a parent's state."""
from __future__ import annotations

import os
import threading
import time
import warnings

from tests.service_support import wait_until
from training.threads import ProcessThread


def test_ensure_starts_one_thread_and_starts_another_only_after_it_died():
    stop = threading.Event()
    starts = []
    worker = ProcessThread(lambda: stop.wait(10), "test-thread", on_start=starts.append)
    assert worker.thread is None and not worker.running()
    threads = [threading.Thread(target=worker.ensure) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = worker.thread
    assert starts == [False] and worker.running() and first.name == "test-thread" and first.daemon
    worker.ensure()
    assert worker.thread is first and starts == [False]

    stop.set()
    first.join(5)
    stop.clear()
    worker.ensure()  # the thread died (here: returned): a new one takes over
    assert worker.thread is not first and worker.running() and starts == [False, False]

    forgotten = worker.forget()
    assert forgotten is not None and worker.thread is None
    stop.set()
    forgotten.join(5)


def test_a_forked_child_starts_its_own_thread_and_drops_what_it_inherited():
    inherited = ["the parent's buffered record"]
    ran_in: list[int] = []

    def on_start(forked: bool) -> None:
        if forked:
            inherited.clear()

    def run() -> None:
        ran_in.append(os.getpid())
        time.sleep(10)

    worker = ProcessThread(run, "test-fork", on_start=on_start)
    worker.ensure()
    assert wait_until(lambda: ran_in == [os.getpid()])
    assert inherited == ["the parent's buffered record"]  # not forked: nothing is dropped

    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about forking a process that runs threads: the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its copy of the worker has no thread until ensure()
        try:
            ok = worker.thread is None and not worker.running()
            worker.ensure()
            ok = ok and wait_until(lambda: os.getpid() in ran_in) and inherited == [] and worker.running()
            os.write(write, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 2)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    # The parent's thread and state are untouched by the child.
    assert worker.running() and inherited == ["the parent's buffered record"] and ran_in == [os.getpid()]
