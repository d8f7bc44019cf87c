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
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
NAME = PACKAGE.name
ALWAYS = ("__init__", "stage", "cache", "codedigest")


# By source text: a build keys a dozen stages whose closures share most modules, and parsing
# is the cost (0.3 s a build when each closure parsed its modules again).
@functools.lru_cache(maxsize=None)
def imported(source: str, package: str = NAME) -> frozenset[str]:
    """The package's top-level modules a module's source imports (relative or absolute)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
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


def closure(modules: Iterable[str], package: Path = PACKAGE) -> list[str]:
    """The modules given, what they import in the package, and so on; sorted. A name that is
    not a module of the package (a subpackage, an object imported by name) is left out."""
    seen: set[str] = set()
    todo = [*ALWAYS, *modules]
    while todo:
        module = todo.pop()
        path = package / f"{module}.py"
        if module in seen or not path.is_file():
            continue
        seen.add(module)
        todo += imported(path.read_text(), package.name)
    return sorted(seen)


def digest(modules: Iterable[str], package: Path = PACKAGE) -> str:
    h = hashlib.sha256()
    for module in closure(modules, package):
        h.update(module.encode() + b"\0" + (package / f"{module}.py").read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def module_digest(module: str, package: Path = PACKAGE) -> str:
    """digest([module]), once per process: a build unpacks a hundred and more packages."""
    return digest([module], package)
