"""A background thread each process runs for itself: the write-behind store, the rate-limit and usage counters, the
log writer, the key and site snapshot, the model poller.

gunicorn imports the app and then forks its workers, and a thread does not survive a fork: a worker inherits the
object but not its thread, nor any state the parent's thread was about to write. `ProcessThread.ensure()` starts the
thread on first use in each process, and again if it ever died; `on_start(forked)` runs first, so an owner can drop
what it inherited from its parent (the parent writes its own buffered records, not the child). Which process a
thread belongs to is a fork generation bumped by os.register_at_fork, so the per-call check is two attribute reads
and no system call.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

_generation = 0
_start_lock = threading.RLock()


def _after_fork_in_child() -> None:
    global _generation, _start_lock
    _generation += 1
    # A thread of the parent may have held the lock at the fork; that thread does not exist here to release it.
    _start_lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ProcessThread:
    """A daemon thread running `target`, one per process, started by `ensure()`."""

    def __init__(self, target: Callable[[], None], name: str,
                 on_start: Callable[[bool], None] | None = None):
        self.target = target
        self.name = name
        self.on_start = on_start
        self._thread: threading.Thread | None = None
        self._generation = _generation

    def ensure(self) -> None:
        """Start the thread unless this process's is alive. `on_start(forked)` runs first, under a lock, with
        forked True when the object was made in (or last started by) a parent process."""
        thread = self._thread
        if thread is not None and self._generation == _generation and thread.is_alive():
            return
        with _start_lock:
            thread = self._thread
            forked = self._generation != _generation
            if thread is not None and not forked and thread.is_alive():
                return
            if self.on_start is not None:
                self.on_start(forked)
            self._generation = _generation
            self._thread = threading.Thread(target=self.target, name=self.name, daemon=True)
            self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        """This process's thread (alive or not), or None when it has not started one."""
        return self._thread if self._generation == _generation else None

    def running(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    def forget(self) -> threading.Thread | None:
        """This process's thread, handed to a caller that has told it to stop (and may join it); the next
        `ensure()` starts a new one."""
        with _start_lock:
            thread, self._thread = self.thread, None
        return thread
