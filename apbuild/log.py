"""Progress and logging: one step line per stage, quiet by default, -v for detail."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

_verbosity = 0  # 0: step lines only, 1: + commands and cache decisions, 2: + command output
_open_line = False  # a step line waits for its " (1.2s)" ending
_depth = 0


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def verbosity() -> int:
    return _verbosity


def _emit(text: str, end: str = "\n") -> None:
    global _open_line
    if _open_line:
        print(file=sys.stderr)
    print(text, file=sys.stderr, end=end, flush=True)
    _open_line = end == ""


def info(message: str) -> None:
    _emit(message)


def detail(message: str) -> None:
    if _verbosity >= 1:
        _emit("  " * (_depth + 1) + message)


def warn(message: str) -> None:
    _emit(f"warning: {message}")


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """'‣ name (1.2s)' around a stage; nested steps indent; a failure names the step."""
    global _open_line, _depth
    start = time.monotonic()
    indent = "  " * _depth
    _emit(f"{indent}‣ {name}", end="")
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        _emit(f"{indent}  ({name} failed)")
        raise
    _depth -= 1
    took = time.monotonic() - start
    if _open_line:  # nothing was printed meanwhile: finish the step's own line
        print(f" ({took:.1f}s)", file=sys.stderr, flush=True)
        _open_line = False
    else:
        _emit(f"{indent}  {name}: {took:.1f}s")
