"""Progress and logging: one step line per stage, quiet by default, -v for detail.

A step run beside the main ones in a thread (apbuild.parallel) writes into its own buffer,
printed whole when it is joined, so two steps' lines never interleave."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
import threading
import time
from collections.abc import Callable, Iterator

_verbosity = 0  # 0: step lines only, 1: + commands and cache decisions, 2: + command output


@dataclasses.dataclass
class _Lines:
    """Where one thread's lines go: stderr (looked up when written: tests capture it), or a
    buffer."""

    buffer: io.StringIO | None = None
    open_line: bool = False  # a step line waits for its " (1.2s)" ending
    depth: int = 0

    def write(self, text: str) -> None:
        if self.buffer is not None:
            self.buffer.write(text)
        else:
            sys.stderr.write(text)
            sys.stderr.flush()


_main = _Lines()
_threads = threading.local()  # .lines: a collecting thread's own


def _lines() -> _Lines:
    return getattr(_threads, "lines", _main)


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def verbosity() -> int:
    return _verbosity


def _emit(text: str, end: str = "\n") -> None:
    out = _lines()
    if out.open_line:
        out.write("\n")
    out.write(text + end)
    out.open_line = end == ""


def info(message: str) -> None:
    _emit(message)


def detail(message: str) -> None:
    if _verbosity >= 1:
        _emit("  " * (_lines().depth + 1) + message)


def warn(message: str) -> None:
    _emit(f"warning: {message}")


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """'‣ name (1.2s)' around a stage; nested steps indent; a failure names the step."""
    out = _lines()
    start = time.monotonic()
    indent = "  " * out.depth
    _emit(f"{indent}‣ {name}", end="")
    out.depth += 1
    try:
        yield
    except BaseException:
        out.depth -= 1
        _emit(f"{indent}  ({name} failed)")
        raise
    out.depth -= 1
    took = time.monotonic() - start
    if out.open_line:  # nothing was printed meanwhile: finish the step's own line
        out.write(f" ({took:.1f}s)\n")
        out.open_line = False
    else:
        _emit(f"{indent}  {name}: {took:.1f}s")


@contextlib.contextmanager
def collected() -> Iterator[io.StringIO]:
    """This thread's lines go into the returned buffer for the block (see replay)."""
    _threads.lines = _Lines(io.StringIO())
    try:
        yield _threads.lines.buffer
    finally:
        if _threads.lines.open_line:
            _threads.lines.write("\n")
        del _threads.lines


def same_lines() -> Callable[[], None]:
    """A worker thread's initializer: its lines go where the calling thread's go."""
    lines = _lines()

    def adopt() -> None:
        if lines is not _main:
            _threads.lines = lines
    return adopt


def replay(text: str) -> None:
    """Print a collected thread's lines here, as whole lines."""
    if text:
        _emit(text, end="" if text.endswith("\n") else "\n")
        _lines().open_line = False
