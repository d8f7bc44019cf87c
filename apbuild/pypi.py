"""Python requirements from PyPI: resolved with pip for the image's Python and architecture,
pinned in the lockfile (name, version, file, SHA-256), and installed from exactly those files
into a virtualenv in the image by the `installer` library: no pip on the device, no root.

Resolution is pip's own, in two passes. The first resolves the requirements on the build
host (whose Python must be the image's: bookworm's 3.11 on a Debian 12 host), so that a
distribution published only as an sdist still takes part; the second asks, for every pinned
version, for the file that suits the target (its CPython, glibc and machine), with
`--no-deps` so that pip may fall back to the sdist where no wheel fits. An sdist is built
into a wheel in pip's isolated build with no C compiler (CC=false): what comes out must be
pure Python (`*-none-any`); one that needs a compiler is an error naming it, because it would
need one for the target's architecture.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import codedigest, debian, log
from .cache import Cache
from .errors import ApbuildError
from .lockfile import PythonDist, Venv
from .run import CommandError, run
from .tree import DIR, FILE, SYMLINK, Entry, Tree

# PyPI's simple index, or $APBUILD_PYPI_INDEX (a mirror of it). pip's own configuration
# files and PIP_* variables are not read when locking: a local find-links or file:// index
# would put into the lockfile a file that only this machine has.
DEFAULT_INDEX = "https://pypi.org/simple"
PYPI_TRIES = 6

# Debian's machine name -> the wheel platform tags' (armel has no binary wheels on PyPI:
# pure Python only).
_MACHINE = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l"}


def python_version(debs: Sequence) -> str:
    """The image's Python (X.Y.Z) from the locked python3.X package."""
    for p in debs:
        if re.fullmatch(r"python3\.\d+", p.name):
            return p.version.split("-")[0].split("+")[0]
    raise ApbuildError("a recipe asks for Python requirements but the image has no Python: "
                       "add the 'python' recipe before it")


def glibc_minor(debs: Sequence) -> int:
    for p in debs:
        if p.name == "libc6":
            return int(p.version.split("-")[0].split(".")[1])
    raise ApbuildError("no libc6 in the lockfile: cannot tell which manylinux wheels fit")


def platforms(arch: str, glibc: int) -> list[str]:
    """The wheel platform tags the target takes, newest first (pip does not expand a
    manylinux_2_X tag to the older ones itself)."""
    machine = _MACHINE.get(arch)
    if machine is None:
        return [f"linux_{arch}"]   # no wheel on PyPI has it: pure wheels and sdists only
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc, 4, -1)]
    return tags + [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    if cert := os.environ.get("PIP_CERT"):
        env["PIP_CERT"] = cert
    return env


def _pip_report(args: list[str], what: str) -> list[dict]:
    index = os.environ.get("APBUILD_PYPI_INDEX", DEFAULT_INDEX)
    with tempfile.TemporaryDirectory(prefix="apbuild-pip-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                "--index-url", index, "--retries", "2", "--timeout", "30",
                "--report", str(report), "--target", str(Path(tmp) / "target"), *args]
        try:
            run(argv, env=_pip_env(), timeout=1800)
        except CommandError as e:
            raise ApbuildError(f"{what}: pip could not resolve it from {index}:\n{_tail(e)}") from None
        return json.loads(report.read_text())["install"]


def _tail(e: CommandError) -> str:
    lines = [line for line in e.stderr.splitlines() if line.strip() and "WARNING" not in line]
    return "\n".join("  " + line for line in lines[-12:])


def _dist(item: dict) -> PythonDist:
    info = item["download_info"]
    hashes = info.get("archive_info", {}).get("hashes") or {}
    sha = hashes.get("sha256") or info.get("archive_info", {}).get("hash", "").removeprefix("sha256=")
    url = info["url"]
    if not url.startswith(("https://", "http://")) or not sha:
        raise ApbuildError(f"{item['metadata']['name']}: pip chose {url}, which is not a file on the "
                           f"index with a SHA-256 (a lockfile pins downloadable files only)")
    return PythonDist(item["metadata"]["name"], item["metadata"]["version"],
                      url.rsplit("/", 1)[1].split("#")[0], url, sha)


def resolve(requirements: Sequence[str], arch: str, version: str, glibc: int,
            cache: Cache, where: str) -> tuple[PythonDist, ...]:
    """Pin the requirements for the target: one file per distribution, sdists checked to
    build pure-Python wheels."""
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    if ".".join(version.split(".")[:2]) != host:
        raise ApbuildError(f"{where}: the image's Python is {version}, the build host's is {host}; "
                           f"Python requirements are locked on a host with the image's Python")
    pins = _pip_report(["--prefer-binary", *requirements], f"{where}: {', '.join(requirements)}")
    pinned = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in pins]
    cp = "".join(version.split(".")[:2])
    target = ["--no-deps", "--prefer-binary", "--implementation", "cp", "--python-version", version,
              "--abi", f"cp{cp}"]
    for tag in platforms(arch, glibc):
        target += ["--platform", tag]
    dists = tuple(sorted((_dist(i) for i in _pip_report(target + pinned, f"{where} for {arch}")),
                         key=lambda d: d.name.lower()))
    for d in dists:
        if d.is_sdist:
            wheel_for(d, cache, arch)   # refused here, at lock time, when it is not pure
    return dists


# -- the build: downloads, sdists to wheels, the virtualenv ---------------------------------

def fetch(dist: PythonDist, cache: Cache) -> Path:
    if not cache.has_blob(dist.sha256):
        with cache.download_file(dist.sha256) as tmp:
            _download(dist, cache, tmp)
    return cache.blob(dist.sha256)


def _download(dist: PythonDist, cache: Cache, tmp: Path) -> None:
    try:
        # PyPI has gone away for a while during a CI run: six tries over about a minute.
        debian.download(dist.url, tmp, tries=PYPI_TRIES)
    except debian.NotFound:
        raise ApbuildError(f"{dist.name} {dist.version}: {dist.url} is gone from the index; "
                           f"lock again ('./build.py lock BOARD')") from None
    except ApbuildError as e:
        # Not the mirror's message: these files come from PyPI (or APBUILD_PYPI_INDEX).
        raise ApbuildError(f"{dist.name} {dist.version}: cannot download {dist.filename} from "
                           f"PyPI ({str(e).split(': ', 1)[-1].split(' (tried')[0]}; tried {PYPI_TRIES} times); the build needs "
                           f"the lockfile's Python files once, then takes them from the cache") from None
    cache.put_blob(tmp, dist.sha256, f"{dist.name} {dist.version} ({dist.filename})")


def wheel_for(dist: PythonDist, cache: Cache, arch: str) -> Path:
    """The pinned wheel, or the pure-Python wheel built from the pinned sdist (cached by the
    sdist's hash)."""
    source = fetch(dist, cache)
    if not dist.is_sdist:
        return _named(source, dist.filename, cache)
    done, _ = cache.produce("sdist-wheel", dist.sha256, lambda work: _build_wheel(dist, source, work, arch),
                            hash_files=False, shared=False)
    (wheel,) = done.glob("*.whl")
    return wheel


def _named(blob: Path, filename: str, cache: Cache) -> Path:
    """installer reads a wheel's name and version from its file name: a link under it."""
    link = cache.root / "wheels" / filename
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{filename}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(blob)
        os.replace(tmp, link)
    return link


def _build_wheel(dist: PythonDist, sdist: Path, work: Path, arch: str) -> None:
    with tempfile.TemporaryDirectory(prefix="apbuild-sdist-") as tmp:
        src = Path(tmp) / dist.filename
        src.symlink_to(sdist)
        env = {**_pip_env(), "CC": "false", "CXX": "false", "LDSHARED": "false",
               "SOURCE_DATE_EPOCH": "315532800"}
        index = os.environ.get("APBUILD_PYPI_INDEX", DEFAULT_INDEX)
        with log.step(f"python: build {dist.name} {dist.version} from its sdist"):
            try:
                run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--index-url", index,
                     "--wheel-dir", str(work), str(src)], env=env, timeout=1800)
            except CommandError as e:
                raise ApbuildError(f"{dist.name} {dist.version} has no wheel for {arch}, only an sdist ({dist.filename}), and "
                                   f"it does not build without a C compiler: it needs one for {arch}; "
                                   f"pin a version with a wheel for {arch}\n{_tail(e)}") from None
    wheels = list(work.glob("*.whl"))
    if len(wheels) != 1 or not wheels[0].name.endswith("-none-any.whl"):
        raise ApbuildError(f"{dist.name} {dist.version} has no wheel for {arch}, only an sdist ({dist.filename}), and it "
                           f"builds {[w.name for w in wheels]}, not a pure-Python wheel: it needs a "
                           f"compiler for {arch}; pin a version with a wheel for {arch}")


def venv_key(venv: Venv, version: str, arch: str, template: bytes | None,
              package: Path = codedigest.PACKAGE) -> str:
    """The virtualenv's inputs and the code that installs it (this module's)."""
    record = json.dumps([dataclasses.asdict(venv), version, arch,
                         codedigest.module_digest(__name__.rpartition(".")[2], package),
                         hashlib.sha256(template or b"").hexdigest()], sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()


def venv_tree(venv: Venv, version: str, arch: str, cache: Cache, template: bytes | None) -> Tree:
    """The virtualenv's files as a Tree, installed once per (venv, Python, arch) into the
    cache. template: the image's venv `activate` script (python3.X's venv/scripts/common)."""
    key = venv_key(venv, version, arch, template)
    done, _ = cache.produce("venv", key, lambda work: _install(venv, version, arch, cache, template, work),
                            hash_files=False, shared=False)
    tree = Tree()
    root = done / "root"
    for path, (kind, mode, extra) in json.loads((done / "manifest.json").read_text()).items():
        if kind == FILE:
            tree.entries[path] = Entry(FILE, mode, source=root / path.lstrip("/"), origin="pypi")
        elif kind == SYMLINK:
            tree.entries[path] = Entry(SYMLINK, 0o777, target=extra, origin="pypi")
        else:
            tree.entries[path] = Entry(DIR, mode, origin="pypi")
    return tree


def _install(venv: Venv, version: str, arch: str, cache: Cache, template: bytes | None, work: Path) -> None:
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    xy = ".".join(version.split(".")[:2])
    root = work / "root"
    site = f"{venv.path}/lib/python{xy}/site-packages"
    scheme = {"purelib": site, "platlib": site, "headers": f"{venv.path}/include/site/python{xy}",
              "scripts": f"{venv.path}/bin", "data": venv.path}
    dest = SchemeDictionaryDestination(scheme, interpreter=f"{venv.path}/bin/python3", script_kind="posix",
                                       bytecode_optimization_levels=(), destdir=str(root))
    with log.step(f"python: install {len(venv.dists)} distributions into {venv.path}"):
        for dist in venv.dists:
            with WheelFile.open(wheel_for(dist, cache, arch)) as source:
                install(source, dest, {"INSTALLER": b"apbuild\n"})
    top = root / venv.path.lstrip("/")
    (top / "bin").mkdir(parents=True, exist_ok=True)
    (top / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\n"
                                    f"version = {version}\n")
    for name, target in (("python3", f"/usr/bin/python{xy}"), ("python", "python3"), (f"python{xy}", "python3")):
        (top / "bin" / name).symlink_to(target)
    if template is not None:
        # What `python3 -m venv` writes: the guide's reader activates the virtualenv.
        text = template.decode()
        for var, value in (("__VENV_DIR__", venv.path), ("__VENV_NAME__", Path(venv.path).name),
                           ("__VENV_PROMPT__", f"({Path(venv.path).name}) "), ("__VENV_BIN_NAME__", "bin"),
                           ("__VENV_PYTHON__", f"{venv.path}/bin/python3")):
            text = text.replace(var, value)
        (top / "bin" / "activate").write_text(text)
    manifest: dict[str, list] = {}
    for path in sorted(root.rglob("*")):
        rel = "/" + str(path.relative_to(root))
        if path.is_symlink():
            manifest[rel] = [SYMLINK, 0o777, os.readlink(path)]
        elif path.is_dir():
            manifest[rel] = [DIR, 0o755, ""]
        else:
            manifest[rel] = [FILE, 0o755 if path.stat().st_mode & 0o111 else 0o644, ""]
    (work / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))

