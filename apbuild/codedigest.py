"""The part of apbuild's own code that a stage runs, as a digest for the stage's key.

A stage runs its `make` function's module, the methods of the objects in its record (their
classes' modules: `stage.code_modules` finds both), and whatever those modules import, read
from the source with `ast` (every import statement, those inside functions too). Keying a
stage by those modules' text alone, and not by the whole package's, lets an edit of the
pipeline, the command line or an output stage keep the kernel, ramdisk and rootfs stages:
a build after such an edit runs only the stages whose code changed, and a release or a
shared cache built from a commit whose image code is the tree's serves the tree's stages.

Always part of it: the package's __init__ (its version), the stage runner and the cache
(they write every result). Imports are followed only inside the package; the host's tools
and Python libraries are not in a key, as before.

Results made outside the stage runner, many times a build by one module's code (a .deb's
unpacked files, a virtualenv), are keyed the same way with module_digest: no version number
kept by hand that an edit could forget to raise.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
NAME = PACKAGE.name
ALWAYS = ("__init__", "stage", "cache", "codedigest")


_PARSING = threading.Lock()


# By source text: a build keys a dozen stages whose closures share most modules, and parsing
# is the cost (0.3 s a build when each closure parsed its modules again).
@functools.lru_cache(maxsize=None)
def imported(source: str, package: str = NAME) -> frozenset[str]:
    """The package's top-level modules a module's source imports (relative or absolute)."""
    found: set[str] = set()
    # One parse at a time: CPython 3.11's parser keeps its AST recursion depth per
    # interpreter, and two threads' stages parsing at once failed a test run with
    # "SystemError: AST constructor recursion depth mismatch".
    with _PARSING:
        tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            absolute = node.level == 0 and (node.module or "").split(".")[0] == package
            if node.level == 1 or absolute:
                parts = (node.module or "").split(".")[0 if node.level == 1 else 1:]
                # `from . import a, b` (and `from package import a`) names modules.
                found |= {parts[0]} if parts and parts[0] else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith(package + ".")}
    return frozenset(found)


class ImportMemo:
    """imported() for the sources earlier builds have read, kept in a small file in the cache
    (a few kilobytes), so that a build parses only the modules edited since: parsing its 35
    modules was about a third of a no-op build. An entry is keyed by the SHA-256 of the whole
    source, so it cannot go stale; a memo that cannot be read or written only costs the parse."""

    KEEP = 500      # entries; the oldest go first (a few per module and edit)

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.known = self._read(path) if path is not None else {}
        self.added = False

    @staticmethod
    def _read(path: Path) -> dict[str, list[str]]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()):
            return {}
        return data

    def imported(self, source: str, package: str = NAME) -> frozenset[str]:
        key = hashlib.sha256(f"{package}\0{source}".encode()).hexdigest()
        if key not in self.known:
            self.known[key] = sorted(imported(source, package))
            self.added = True
        return frozenset(self.known[key])

    def save(self) -> None:
        """Write the memo if it learnt something: a file of its own, renamed into place, as
        several builds may save at once (the last one's stays; the others' parse again)."""
        if self.path is None or not self.added:
            return
        kept = dict(list(self.known.items())[-self.KEEP:])
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o644)        # as the cache's other files, not mkstemp's 0600
                json.dump(kept, f)
            os.replace(tmp, self.path)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return          # a read-only or full cache: the next build parses again
        self.added = False


def closure(modules: Iterable[str], package: Path = PACKAGE, memo: ImportMemo | None = None) -> list[str]:
    """The modules given, what they import in the package, and so on; sorted. A name that is
    not a module of the package (a subpackage, an object imported by name) is left out."""
    find = memo.imported if memo is not None else imported
    seen: set[str] = set()
    todo = [*ALWAYS, *modules]
    while todo:
        module = todo.pop()
        path = package / f"{module}.py"
        if module in seen or not path.is_file():
            continue
        seen.add(module)
        todo += find(path.read_text(), package.name)
    return sorted(seen)


def digest(modules: Iterable[str], package: Path = PACKAGE, memo: ImportMemo | None = None) -> str:
    h = hashlib.sha256()
    for module in closure(modules, package, memo):
        h.update(module.encode() + b"\0" + (package / f"{module}.py").read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def module_digest(module: str, package: Path = PACKAGE) -> str:
    """digest([module]), once per process: a build unpacks a hundred and more packages."""
    return digest([module], package)
