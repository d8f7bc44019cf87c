"""A step of the build that runs in a thread beside the next ones. The build's heavy steps
leave a core idle: the ramdisk's package layer (Python, then a one-block xz) can pack while
the rootfs's does, and the raw disk's SHA-256 (one core, 8 s for 16 GiB) can be taken while
its other outputs are made. Its progress lines are collected and printed whole when it is
joined (apbuild.log), so two steps never share a line."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from . import log

T = TypeVar("T")


class Job(Generic[T]):
    def __init__(self, name: str, work: Callable[[], T]) -> None:
        self._work = work
        self._result: T | None = None
        self._error: BaseException | None = None
        self._text = ""
        self._replayed = False
        self._thread = threading.Thread(target=self._run, name=f"apbuild {name}")

    def _run(self) -> None:
        with log.collected() as lines:
            try:
                self._result = self._work()
            except BaseException as e:  # noqa: BLE001 - handed to whoever joins
                self._error = e
        self._text = lines.getvalue()

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Wait for the step and print its lines (once)."""
        self._thread.join()
        if not self._replayed:
            self._replayed = True
            log.replay(self._text)

    def result(self) -> T:
        """The step's result, or its exception raised here."""
        self.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


@contextlib.contextmanager
def beside(name: str, work: Callable[[], T]) -> Iterator[Job[T]]:
    """Run work in a thread during the block; the block's end waits for it, even when the
    block fails (no stage is left building under a process that has moved on)."""
    job = Job(name, work)
    job.start()
    try:
        yield job
    finally:
        job.join()
