"""Unpack Debian packages into the cache, without running maintainer scripts or needing root.

A package's data.tar is read with Python's tarfile from `dpkg-deb --fsys-tarfile`; file
contents go to the cache directory keyed by the .deb's SHA-256, owners, modes and links to
a manifest beside them. Paths are merged into /usr (/bin -> /usr/bin ...), as Debian does
from bookworm on, so two packages never disagree about where a file lives.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from . import codedigest
from .cache import Cache
from .run import spawn
from .tree import DIR, FILE, SYMLINK, Entry, Tree, norm

USRMERGE = {"/bin": "/usr/bin", "/sbin": "/usr/sbin", "/lib": "/usr/lib",
            "/lib32": "/usr/lib32", "/lib64": "/usr/lib64", "/libx32": "/usr/libx32"}


def merged(path: str) -> str:
    path = norm(path)
    for old, new in USRMERGE.items():
        if path == old or path.startswith(old + "/"):
            return new + path[len(old):]
    return path


def merged_links() -> Tree:
    """/bin -> usr/bin and friends, so paths resolve in a package pool as on the device."""
    tree = Tree()
    for old, new in USRMERGE.items():
        tree.add(old, Entry(SYMLINK, 0o777, target=new.lstrip("/"), origin="usrmerge"))
    return tree


def unpack_key(sha256: str, package: Path = codedigest.PACKAGE) -> str:
    """A .deb's unpacked files: its hash and the code that unpacks it (this module's)."""
    return f"{sha256}-{codedigest.module_digest(__name__.rpartition('.')[2], package)[:16]}"


def unpack(cache: Cache, deb: Path, sha256: str, name: str) -> Tree:
    """The package's files as a Tree (content in the cache), unpacking once per .deb."""
    key = unpack_key(sha256)
    # Not shared through a remote cache: unpacking is quicker than asking for it there (the
    # .deb itself is shared).
    done, _ = cache.produce("unpack", key, lambda work: _unpack_into(deb, work, name),
                            hash_files=False, shared=False)
    manifest = json.loads((done / "manifest.json").read_text())
    tree = Tree()
    root = done / "root"
    for path, (kind, mode, uid, gid, extra) in manifest.items():
        if kind == FILE:
            entry = Entry(FILE, mode, uid, gid, source=root / extra, origin=name)
        elif kind == SYMLINK:
            entry = Entry(SYMLINK, 0o777, uid, gid, target=extra, origin=name)
        else:
            entry = Entry(DIR, mode, uid, gid, origin=name)
        tree.entries[path] = entry
    return tree


def _unpack_into(deb: Path, work: Path, name: str) -> None:
    manifest: dict[str, list] = {}
    root = work / "root"
    count = 0
    with spawn(["dpkg-deb", "--fsys-tarfile", deb]) as proc, \
            tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for info in tar:
            path = merged(info.name)
            if path == "/":
                continue
            if info.isdir():
                manifest[path] = [DIR, info.mode & 0o7777, info.uid, info.gid, ""]
            elif info.issym():
                manifest[path] = [SYMLINK, 0o777, info.uid, info.gid, info.linkname]
            elif info.islnk():
                # A hard link shares its target's content: point at the same stored file.
                target = manifest.get(merged(info.linkname))
                if target is None or target[0] != FILE:
                    continue
                manifest[path] = [FILE, info.mode & 0o7777, info.uid, info.gid, target[4]]
            elif info.isfile():
                count += 1
                rel = f"{count:06d}"
                dest = root / rel[:3] / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(info)
                assert src is not None
                with open(dest, "wb") as f:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
                manifest[path] = [FILE, info.mode & 0o7777, info.uid, info.gid, f"{rel[:3]}/{rel}"]
            # device nodes and fifos in packages are not used by the appliance
    (work / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
