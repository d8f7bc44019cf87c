"""Compiled Python modules for an image: each Python source of the rootfs's package layer
gets its `__pycache__/NAME.cpython-3Y.pyc`, made at build time as Debian's postinst
(py3compile) and pip make them at install time.

Without them every Python program on the device compiled what it imported, at each start
where it could not write the cache (a service's own user cannot write beside the image's
modules) and at the first start after each install or update otherwise: importing BIP's
application compiles for 0.8 s of its 1.1 s on the build host, a good deal more under
emulation or on a small device.

The files are checked-hash pycs (PEP 552): Python compares the source's hash, not its mtime,
so a module edited on the device is compiled again and the image's bytes depend on nothing
but the sources. They are made by the host's Debian Python of the image's version (the
bytecode and its magic number are the version's), in one process, in a fixed order, with a
fixed hash seed: marshal's output depends on what the process holds (a string referenced
elsewhere is written as a reference), so the same sources in the same order give the same
bytes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from . import log
from .errors import ApbuildError
from .run import run
from .tree import DIR, FILE, Entry, Tree

# Where Python imports from on a Debian system and in a virtualenv.
PYTHON_PATHS = re.compile(r"^/usr/lib/python3(\.\d+)?/|/lib/python3\.\d+/site-packages/")
STDLIB = re.compile(r"^/usr/lib/python(3\.\d+)/os\.py$")

# Run by the host's python3.Y: compile every .py under the work directory (compileall walks
# it in sorted order), the device's paths in the code objects (a traceback names /usr/lib/...,
# not the build's directory). A file that does not compile is skipped; the command fails only
# if Python itself does.
COMPILE = """
import compileall, py_compile, sys
compileall.compile_dir(sys.argv[1], quiet=2, stripdir=sys.argv[1], prependdir="/", workers=1,
                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
"""


def image_python(tree: Tree) -> str | None:
    """The image's Python version (3.Y) from its standard library, or None."""
    for path in tree.entries:
        if match := STDLIB.match(path):
            return match.group(1)
    return None


def host_python(version: str, where: str) -> Path:
    """The host's Debian Python of that version (not one earlier on PATH: its bytes may differ)."""
    path = Path(f"/usr/bin/python{version}")
    if not path.exists():
        raise ApbuildError(f"{where}: the image's Python is {version}; compiling its modules needs "
                           f"the host's {path} (apt-get install python{version}-minimal)")
    return path


def compile_tree(tree: Tree, where: str, scratch: Path) -> int:
    """Add the pyc of each Python source in the tree's import paths; the number added.
    scratch: an empty directory of the caller's (the stage's work directory) to compile in."""
    version = image_python(tree)
    if version is None:
        return 0
    # A source may be a link (Debian's sitecustomize.py, read at every start, links to /etc):
    # Python imports it by the link's path and caches it beside the link.
    sources = {}
    for path, entry in tree:
        if path.endswith(".py") and PYTHON_PATHS.search(path) and entry.kind != DIR:
            real = tree.get(tree.resolve(path) or "")
            if real is not None and real.kind == FILE:
                sources[path] = real
    if not sources:
        return 0
    python = host_python(version, where)
    tag = f"cpython-{version.replace('.', '')}"
    work = scratch / "pyc"
    try:
        for path, entry in sources.items():
            dest = work / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(entry.read())
        # A source that does not compile (a test's deliberately broken file, Python 2 code a
        # package ships unused) gets no pyc, as with py3compile: Python reads its source.
        run([python, "-c", COMPILE, work], env={"PYTHONHASHSEED": "0"})
        added = 0
        for path in sources:
            parent, name = path.rsplit("/", 1)
            pyc = work / parent.lstrip("/") / "__pycache__" / f"{name[:-3]}.{tag}.pyc"
            if pyc.exists():
                tree.add(f"{parent}/__pycache__/{pyc.name}", Entry(FILE, 0o644, data=pyc.read_bytes(),
                                                                   origin="compiled"))
                added += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.detail(f"{where}: {added} of {len(sources)} Python modules compiled (Python {version})")
    return added
