"""Resolve and fetch Debian packages, verifying the whole signature chain ourselves.

InRelease is checked with gpgv against Debian's archive keyring and only its signed text is
read; each Packages index must match the SHA-256 and size InRelease gives; each .deb must
match the SHA-256 its Packages entry gives (recorded in the lockfile). apt resolves the
dependencies, in a state directory of our own so the host's apt is neither used nor changed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import email.utils
import lzma
import posixpath
import re
import shutil
import tempfile
import time
from pathlib import Path


from . import control, log
from .cache import Cache, sha256_file
from .errors import ApbuildError, IntegrityError
from .lockfile import LockedPackage, Lockfile
from .mirror import Source
from .run import run

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SYNC_HINTS = ("File has unexpected size", "Mirror sync in progress", "Hash Sum mismatch")


class MirrorSyncError(ApbuildError):
    pass


class NotFound(Exception):
    """The mirror has no such file (HTTP 404, or missing in a file:// mirror)."""


def download(url: str, dest: Path, tries: int = 3, wait: float = 2.0) -> None:
    """Download with retries, waiting `wait` seconds after the first failure and twice as
    long after each next one; raises NotFound for a missing file (callers say what it means)."""
    # urllib and python-debian are imported where used: a build whose stages and downloads
    # are all cached needs neither (they are a tenth of a no-op build's time).
    import urllib.error
    import urllib.request

    for attempt in range(1, tries + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            return
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise NotFound(url) from None
            error: Exception = e
        except urllib.error.URLError as e:
            if isinstance(e.reason, FileNotFoundError):
                raise NotFound(url) from None
            error = e
        except (OSError, TimeoutError) as e:
            error = e
        dest.unlink(missing_ok=True)
        if attempt < tries:
            time.sleep(wait * 2 ** (attempt - 1))
    reason = getattr(error, "reason", error)
    raise ApbuildError(f"cannot download {url}: {reason} (tried {tries} times; is the mirror "
                       f"from the apt sources reachable? APBUILD_MIRROR overrides it)")


@dataclasses.dataclass(frozen=True)
class Release:
    source: Source
    date: str
    sha256: dict[str, tuple[str, int]]   # path under dists/<suite>/ -> (sha256, size)
    inrelease: bytes = b""               # the file as downloaded (its signature verified)


def verify_inrelease(data: bytes, keyring: Path, what: str) -> str:
    """The signed text of an InRelease file; IntegrityError if the signature is not good."""
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as f:
        f.write(data)
        f.flush()
        proc = run(["gpgv", "--keyring", keyring, "--output", "-", f.name], check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no detail"]
        raise IntegrityError(f"{what}: InRelease signature is not valid against {keyring} ({detail[0]}); refused")
    return proc.stdout.decode()


def parse_release(text: str, source: Source, raw: bytes = b"") -> Release:
    from debian import deb822

    release = deb822.Release(text)
    date = release.get("Date", "")
    sums = {f["name"]: (f["sha256"], int(f["size"])) for f in release.get("SHA256", [])}
    if not date or not sums:
        raise IntegrityError(f"{source.uri} {source.suite}: InRelease has no Date or SHA256 list")
    return Release(source, date, sums, raw)


def fetch_release(source: Source, keyring: Path, cache: Cache) -> Release:
    with cache.download_file(f"InRelease-{source.suite}") as tmp:
        try:
            download(f"{source.uri}/dists/{source.suite}/InRelease", tmp)
        except NotFound as e:
            raise ApbuildError(f"{source.uri} has no suite {source.suite} ({e})") from None
        raw = tmp.read_bytes()
    text = verify_inrelease(raw, keyring, f"{source.uri} {source.suite}")
    return parse_release(text, source, raw)


_PACKAGE = re.compile(r"^Package:[ \t]*(\S+)", re.MULTILINE)
_VERSION = re.compile(r"^Version:[ \t]*(\S+)", re.MULTILINE)


def parse_packages(text: str) -> dict[tuple[str, str], str]:
    """Each stanza's text of a Packages index by (name, version). Only the stanzas apt
    chooses are parsed as deb822 (control.fields): python-debian reads all of bookworm's
    66 000 in 30 s, ten times what the rest of a lock takes."""
    out = {}
    for stanza in text.split("\n\n"):
        name, version = _PACKAGE.search(stanza), _VERSION.search(stanza)
        if name and version:
            out[(name[1], version[1])] = stanza
    return out


def has_index(release: Release, arch: str) -> bool:
    base = f"{release.source.component}/binary-{arch}/Packages"
    return any(release.sha256.get(base + ext, ("", 0))[1] > 0 for ext in ("", ".xz"))


def fetch_packages_index(release: Release, arch: str, cache: Cache) -> str:
    """The verified Packages index: Packages.xz, plain Packages, or either by hash (what apt
    uses while a mirror syncs); MirrorSyncError if every copy disagrees with InRelease."""
    source = release.source
    base = f"{source.component}/binary-{arch}/Packages"
    mismatched = []
    for rel, unpack in ((base + ".xz", lzma.decompress), (base, lambda data: data)):
        if rel not in release.sha256:
            continue
        digest, size = release.sha256[rel]
        by_hash = f"{posixpath.dirname(rel)}/by-hash/SHA256/{digest}"
        for path in (rel, by_hash):
            if cache.has_blob(digest):
                break
            with cache.download_file(f"Packages-{source.suite}-{arch}") as tmp:
                try:
                    download(f"{source.uri}/dists/{source.suite}/{path}", tmp)
                except NotFound:
                    continue
                if tmp.stat().st_size == size and sha256_file(tmp) == digest:
                    cache.put_blob(tmp, digest, f"{source.suite} {rel}")
                else:
                    mismatched.append(path)
        if cache.has_blob(digest):
            return unpack(cache.blob(digest).read_bytes()).decode()
    if mismatched:
        raise MirrorSyncError(f"{source.uri} {source.suite}: {', '.join(mismatched)} do not match "
                              f"InRelease (the mirror may be syncing)")
    raise ApbuildError(f"{source.uri} {source.suite}: no Packages index for architecture {arch}")


def _apt(state: Path, arch: str, *args: str) -> tuple[int, str, str]:
    """apt-get's exit status, stdout and stderr; apt reads only the state dir given."""
    opts = [
        f"-oAPT::Architecture={arch}", f"-oAPT::Architectures::={arch}",
        f"-oDir::State={state}/state", f"-oDir::State::status={state}/status",
        f"-oDir::Cache={state}/cache", f"-oDir::Etc::SourceList={state}/sources.list",
        f"-oDir::Etc::SourceParts={state}/empty", f"-oDir::Etc::Preferences={state}/empty/prefs",
        f"-oDir::Etc::PreferencesParts={state}/empty", "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root", "-oAcquire::Languages=none", "-oAPT::Install-Recommends=false",
        "-oAPT::Get::List-Cleanup=false",
    ]
    proc = run(["apt-get", *opts, *args], check=False)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def _lists_name(uri: str) -> str:
    """apt's flat file name for a URI (URItoFileName): no scheme, '_' quoted, '/' -> '_'."""
    rest = uri.split(":", 1)[1].lstrip("/") if "://" in uri else uri.split(":", 1)[1]
    rest = rest.replace("_", "%5f")
    return rest.replace("/", "_").strip("_") if "://" in uri else rest.replace("/", "_")


def apt_resolve(arch: str, packages: tuple[str, ...], indexes: list[tuple[Release, str]],
                keyring: Path, cache: Cache) -> list[tuple[str, str]]:
    """Let apt pick the package set from our verified indexes (it never downloads anything)."""
    state = cache.root / "apt" / arch
    shutil.rmtree(state, ignore_errors=True)
    lists = state / "state" / "lists"
    for sub in (lists / "partial", state / "cache/archives/partial", state / "empty"):
        sub.mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    lines = []
    for release, text in indexes:
        s = release.source
        lines.append(f"deb [arch={arch} signed-by={keyring}] {s.uri} {s.suite} {s.component}\n")
        prefix = f"{_lists_name(s.uri)}_dists_{s.suite}"
        (lists / f"{prefix}_InRelease").write_bytes(release.inrelease)
        (lists / f"{prefix}_{s.component}_binary-{arch}_Packages").write_text(text)
    (state / "sources.list").write_text("".join(lines))
    returncode, stdout, stderr = _apt(state, arch, "-s", "install", *packages)
    if returncode != 0:
        raise ApbuildError(f"apt cannot resolve {' '.join(packages)} for {arch}:\n{stdout[-1500:]}{stderr[-1500:]}")
    found = re.findall(r"^Inst (\S+) \((\S+) ", stdout, re.MULTILINE)
    if not found:
        raise ApbuildError(f"apt resolved nothing for {' '.join(packages)} ({arch}):\n{stdout[-800:]}{stderr[-800:]}")
    return [(name.split(":")[0], version) for name, version in found]


def lock(arch: str, packages: tuple[str, ...], exclude: tuple[str, ...], sources: tuple[Source, ...],
         cache: Cache, keyring: Path = KEYRING, retries: int = 4) -> Lockfile:
    for attempt in range(1, retries + 1):
        try:
            return _lock_once(arch, packages, exclude, sources, cache, keyring)
        except MirrorSyncError as e:
            if attempt == retries:
                raise MirrorSyncError(f"the Debian mirror seems to be in the middle of a sync ({e}); "
                                      f"tried {retries} times: try again in a few minutes") from None
            log.warn(f"{e}; retrying in {5 * attempt}s")
            time.sleep(5 * attempt)
    raise AssertionError("unreachable")


def _lock_once(arch, packages, exclude, sources, cache, keyring) -> Lockfile:
    releases = [fetch_release(s, keyring, cache) for s in sources]
    native = tuple(p for p in packages if ":" not in p)
    foreign: dict[str, list[str]] = {}
    for p in packages:
        if ":" in p:
            name, parch = p.split(":", 1)
            foreign.setdefault(parch, []).append(name)
    locked = _resolve_arch(arch, native, exclude, releases, cache, keyring)
    for parch, names in foreign.items():
        # A foreign package is a kernel (the armhf armmp kernel of an armel board): only the
        # kernel images come from that arch, never its userspace dependencies.
        for pkg in _resolve_arch(parch, tuple(names), exclude, releases, cache, keyring, True):
            if pkg.name.startswith("linux-image-"):
                locked.append(pkg)
    newest = max(releases, key=lambda r: email.utils.parsedate_to_datetime(r.date))
    return Lockfile(arch, newest.date, tuple(packages), tuple(sorted(exclude)),
                    tuple(sorted(locked, key=lambda p: p.name)))


def _resolve_arch(arch, packages, exclude, releases, cache, keyring,
                  kernel_only: bool = False) -> list[LockedPackage]:
    # A suite may not carry every arch (bookworm-security's LTS dropped armel): skip it there.
    carrying = [r for r in releases if has_index(r, arch)]
    if not carrying:
        raise ApbuildError(f"no suite of the mirror has packages for {arch}")
    for r in releases:
        if r not in carrying:
            log.detail(f"{r.source.suite} has no {arch} packages: skipped for {arch}")
    texts = []
    for r in carrying:
        try:
            texts.append((r, fetch_packages_index(r, arch, cache)))
        except MirrorSyncError as e:
            # An arch that only gives the kernel (armhf for armel) must not stop the build
            # over an update suite in mid-sync: the release suite still has the kernel.
            if not kernel_only or r is carrying[0]:
                raise
            log.warn(f"{e}: {arch} packages from {r.source.suite} left out of this lock")
    indexes = [(r, parse_packages(t)) for r, t in texts]
    chosen = apt_resolve(arch, packages, texts, keyring, cache)
    locked = []
    for name, version in chosen:
        if name in exclude:
            continue
        for release, index in reversed(indexes):  # security, updates, then the release
            stanza = index.get((name, version))
            if stanza is not None:
                break
        else:
            raise IntegrityError(f"apt chose {name} {version}, which no verified Packages index lists")
        fields = control.fields(stanza)
        source_pkg = fields.get("Source", name).split()[0]
        locked.append(LockedPackage(name, version, fields.get("Architecture", arch), release.source.suite,
                                    fields["Filename"], int(fields["Size"]), fields["SHA256"], source_pkg))
    return locked


def fetch(lockfile: Lockfile, sources: tuple[Source, ...], cache: Cache, *, board: str = "BOARD") -> dict[str, Path]:
    """Every locked .deb from the cache, downloading and verifying the missing ones."""
    by_suite = {s.suite: s for s in sources}
    missing = [p for p in lockfile.packages if not cache.has_blob(p.sha256)]

    def get(pkg: LockedPackage) -> None:
        with cache.download_file(pkg.sha256) as tmp:
            fetch_one(pkg, tmp)

    def fetch_one(pkg: LockedPackage, tmp: Path) -> None:
        what = f"{pkg.name} {pkg.version}"
        if cache.remote is not None and cache.remote.pull_blob(pkg.sha256, tmp):
            try:
                cache.put_blob(tmp, pkg.sha256, f"{what} from {cache.remote}")
                return
            except IntegrityError as e:
                log.warn(f"{e}; downloading it from the mirror")
        source = by_suite.get(pkg.suite)
        if source is None:
            raise ApbuildError(f"{pkg.name} {pkg.version} comes from '{pkg.suite}', which the apt "
                               f"sources do not list; add it or set APBUILD_MIRROR")
        try:
            download(f"{source.uri}/{pkg.filename}", tmp)
        except NotFound:
            raise ApbuildError(f"{pkg.name} {pkg.version} is no longer on the mirror ({pkg.suite}): "
                               f"refresh the lockfile with './build.py lock {board}'") from None
        cache.put_blob(tmp, pkg.sha256, what)
        if cache.remote is not None:
            cache.remote.push_blob(pkg.sha256, cache.blob(pkg.sha256))

    if missing:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(get, p) for p in missing]:
                future.result()
    return {p.name: cache.blob(p.sha256) for p in lockfile.packages}


