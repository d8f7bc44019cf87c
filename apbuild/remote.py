"""A build cache shared through an OCI registry (`--cache-remote oci://HOST[:PORT]/REPOSITORY`):
what Harbor, GitLab, GitHub, Artifactory, ECR, ACR and the CNCF distribution registry speak.

Two kinds of artifact, each one manifest with one layer:
- a stage result, tagged `STAGE-KEY` (the stage key of stage.py: same code and inputs, same
  tag); its layer is an uncompressed tar of the result directory (stage results are mostly xz
  and qcow2 already), sparse files stored as their data extents;
- a downloaded .deb, tagged `deb-SHA256`; its layer is the .deb itself, so the blob's digest
  is the lockfile's SHA-256 and the package is read by digest.

What comes in is checked before it is used: the layer against the digest and size its
manifest gives (a tampered or truncated blob is refused, and the stage is built), the
manifest's annotations against the stage and key asked for, and then each file against the
fingerprints the pushing build recorded (cache.lookup). A registry that does not answer,
or stops answering, is said once and then left alone: the build goes on locally.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

from . import log
from .errors import ApbuildError
from .cache import CHECKED
from .files import data_extents, tar_member

STAGE_MEDIA = "application/vnd.apbuild.stage.v1.tar"
DEB_MEDIA = "application/vnd.debian.binary-package"
ARTIFACT = "application/vnd.apbuild.cache.v1"
KEY_NOTE, STAGE_NOTE = "org.apbuild.stage.key", "org.apbuild.stage.name"
SPARSE_NOTE, SIZE_NOTE = "APBUILD.extents", "APBUILD.size"
LOOPBACK = {"localhost", "127.0.0.1", "[::1]"}
TIMEOUT = 60   # seconds a request may take before the registry counts as gone


@dataclasses.dataclass(frozen=True)
class RemoteURL:
    host: str          # HOST[:PORT]
    repository: str
    insecure: bool     # plain HTTP: only for a registry on the loopback, as Docker allows

    def __str__(self) -> str:
        return f"oci://{self.host}/{self.repository}"


def parse(url: str) -> RemoteURL:
    """oci://HOST[:PORT]/REPOSITORY, or one error that shows the form."""
    m = re.fullmatch(r"oci://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:\d+)?/([a-z0-9]+(?:[._/-][a-z0-9]+)*)", url)
    if m is None:
        raise ApbuildError(f"--cache-remote {url!r}: expected oci://HOST[:PORT]/REPOSITORY (a repository "
                           f"name in lower case, e.g. oci://registry.example.com/apbuild/cache)")
    host = m.group(1) + (m.group(2) or "")
    return RemoteURL(host, m.group(3), insecure=m.group(1) in LOOPBACK)


def _registry_class() -> Any:
    try:
        import oras.provider
        import requests
    except ImportError:
        raise ApbuildError("--cache-remote needs the Python package oras (pip install oras; "
                           "not packaged by Debian bookworm)") from None

    class Registry(oras.provider.Registry):
        """oras' registry client without its retries (five, for minutes) and with a timeout:
        a registry that is gone costs one failed request, then the build goes on."""

        def __init__(self, hostname: str, insecure: bool) -> None:
            super().__init__(hostname=hostname, insecure=insecure)
            self.session.request = functools.partial(self.session.request, timeout=TIMEOUT)

        def do_request(self, *args, **kwargs):
            return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)

    return Registry, (requests.RequestException, OSError, ValueError)


class Remote:
    """One registry repository, for one build process."""

    def __init__(self, url: str) -> None:
        self.url = parse(url)
        registry, self._errors = _registry_class()
        self._client = registry(self.url.host, self.url.insecure)
        # The registry's credentials, where Docker and ORAS keep them (~/.docker/config.json).
        self._client.auth.load_configs(self._client.get_container(self._ref("credentials")))
        self.gone: str | None = None   # why the registry is no longer asked
        # One request at a time: a build's steps beside each other (apbuild.parallel) share
        # the client, whose session and token are not made for threads.
        self._one = threading.Lock()

    def __str__(self) -> str:
        return str(self.url)

    def _ref(self, tag: str) -> str:
        return f"{self.url.host}/{self.url.repository}:{tag}"

    def _guarded(self, what: str, call, default=None):
        """call(), or `default` once the registry has failed (said once)."""
        with self._one:
            return self._guarded_call(what, call, default)

    def _guarded_call(self, what: str, call, default):
        if self.gone is not None:
            return default
        try:
            return call()
        except self._errors as e:
            # requests' own text nests the cause three deep: the errno line says it.
            found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(e))
            self.gone = found.group(0) if found else f"{type(e).__name__}: {e}"
            log.warn(f"remote cache {self}: {what[:60]} failed ({self.gone}); "
                     f"going on with the local cache only")
            return default

    def _manifest(self, tag: str, method: str = "GET"):
        """The tag's manifest (GET) or its response (HEAD), None when the registry has no such tag."""
        container = self._client.get_container(self._ref(tag))
        response = self._client.do_request(f"{self._client.prefix}://{container.manifest_url()}", method,
                                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json() if method == "GET" else response

    def _download(self, tag: str, layer: dict, dest: Path) -> bool:
        """The layer's blob into dest, True if its digest and size are the manifest's."""
        container = self._client.get_container(self._ref(tag))
        self._client.download_blob(container, layer["digest"], str(dest))
        h = hashlib.sha256()
        with open(dest, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        actual, size = f"sha256:{h.hexdigest()}", dest.stat().st_size
        if actual == layer["digest"] and size == layer["size"]:
            return True
        log.warn(f"remote cache {self}: {tag[:-52]}: the blob is {size} bytes with {actual[:19]}, "
                 f"its manifest says {layer['size']} bytes with {layer['digest'][:19]}; refused")
        dest.unlink(missing_ok=True)
        return False

    def _push(self, tag: str, blob: Path, media: str, notes: dict[str, str]) -> None:
        """blob as the one layer of a manifest tagged `tag` (a blob the registry has already
        is not sent again)."""
        import oras.oci

        container = self._client.get_container(self._ref(tag))
        layer = oras.oci.NewLayer(str(blob), media_type=media)
        if not self._client.blob_exists(layer, container):
            self._client._check_200_response(
                self._client.upload_blob(str(blob), container, layer, do_chunked=blob.stat().st_size > 64 << 20))
        config, _ = oras.oci.ManifestConfig(media_type=ARTIFACT)
        if not self._client.blob_exists(config, container):
            with tempfile.NamedTemporaryFile("wb", suffix=".json") as empty:
                empty.write(b"{}")
                empty.flush()
                self._client._check_200_response(self._client.upload_blob(empty.name, container, config))
        manifest = oras.oci.NewManifest()
        manifest.update(config=config, layers=[layer], annotations=notes)
        self._client._check_200_response(self._client.upload_manifest(manifest, container))

    # -- stage results ----------------------------------------------------------------------
    def pull_stage(self, stage: str, key: str, dest: Path) -> bool:
        """The stage's result unpacked into the empty directory dest, True if the registry
        had it and it passed the checks."""
        tag = f"{stage}-{key}"

        def pull() -> bool:
            manifest = self._manifest(tag)
            if manifest is None:
                return False
            notes, layers = manifest.get("annotations") or {}, manifest.get("layers") or []
            if (notes.get(STAGE_NOTE), notes.get(KEY_NOTE)) != (stage, key) or len(layers) != 1 \
                    or layers[0].get("mediaType") != STAGE_MEDIA:
                log.warn(f"remote cache {self}: {tag} is not this stage's result; refused")
                return False
            blob = dest.parent / f"{dest.name}.tar"
            try:
                if not self._download(tag, layers[0], blob):
                    return False
                with log.step(f"{stage} (from {self})"):
                    try:
                        unpack(blob, dest)
                    except (ApbuildError, tarfile.TarError) as e:
                        log.warn(f"remote cache {self}: {tag}: {e}; refused")
                        return False
                return True
            finally:
                blob.unlink(missing_ok=True)
        return self._guarded(f"reading {tag}", pull, False)

    def offer_stage(self, stage: str, key: str, result: Path) -> None:
        """Push the result unless the registry has it."""
        tag = f"{stage}-{key}"
        if self._guarded(f"looking up {tag}", lambda: self._manifest(tag, "HEAD") is not None, True) is False:
            self.push_stage(stage, key, result)

    def push_stage(self, stage: str, key: str, result: Path) -> None:
        tag = f"{stage}-{key}"

        def push() -> None:
            with tempfile.TemporaryDirectory(dir=result.parent.parent) as tmp:
                blob = Path(tmp) / "stage.tar"
                pack(result, blob)
                self._push(tag, blob, STAGE_MEDIA, {STAGE_NOTE: stage, KEY_NOTE: key})
            log.detail(f"pushed {tag[:len(stage) + 13]} to {self}")
        self._guarded(f"pushing {tag}", push)

    # -- downloaded packages ----------------------------------------------------------------
    def pull_blob(self, sha256: str, dest: Path) -> bool:
        """The .deb with this SHA-256 into dest, True if the registry has it (the caller
        checks the hash, as it does for the mirror's)."""
        def pull() -> bool:
            container = self._client.get_container(self._ref(f"deb-{sha256}"))
            response = self._client.get_blob(container, f"sha256:{sha256}", head=True)
            if response.status_code == 404:
                return False
            response.raise_for_status()
            self._client.download_blob(container, f"sha256:{sha256}", str(dest))
            return True
        return self._guarded(f"reading package {sha256[:12]}", pull, False)

    def push_blob(self, sha256: str, path: Path) -> None:
        self._guarded(f"pushing package {sha256[:12]}",
                      lambda: self._push(f"deb-{sha256}", path, DEB_MEDIA, {}))


# -- the layer of a stage result -------------------------------------------------------------

def pack(directory: Path, out: Path) -> None:
    """directory's files as a tar with nothing of the host in it; a file with holes (a sparse
    disk image) keeps only its data, its extents and size in the member's pax header."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        # The stats recorded for this cache's checks are this host's, not the result's.
        for path in sorted(p for p in directory.rglob("*") if not p.is_dir() and p.name != CHECKED):
            if path.is_symlink() or not path.is_file():
                raise ApbuildError(f"{path}: a stage result holds regular files only")
            # Time 0: a result's layer is named by its content, its files' dates mean nothing.
            info = tar_member(str(path.relative_to(directory)), 0,
                              mode=0o755 if os.access(path, os.X_OK) else 0o644)
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                extents = list(data_extents(f.fileno()))
                if sum(end - start for start, end in extents) < size:
                    info.pax_headers = {SPARSE_NOTE: json.dumps(extents), SIZE_NOTE: str(size)}
                    info.size = sum(end - start for start, end in extents)
                    tar.addfile(info, _Extents(f, extents))
                else:
                    info.size = size
                    f.seek(0)   # the extents' walk moved the file's offset
                    tar.addfile(info, f)


class _Extents:
    """A file's data extents read one after the other, as tarfile reads a member's data."""

    def __init__(self, f, extents: list[tuple[int, int]]) -> None:
        self.f, self.extents = f, list(extents)

    def read(self, n: int) -> bytes:
        """n bytes, fewer only at the end (tarfile asks for whole buffers)."""
        parts, left = [], n
        while left and self.extents:
            start, end = self.extents[0]
            if start == end:
                self.extents.pop(0)
                continue
            self.f.seek(start)
            data = self.f.read(min(left, end - start))
            if not data:
                raise ApbuildError(f"{self.f.name}: shorter than its extents while packing")
            self.extents[0] = (start + len(data), end)
            parts.append(data)
            left -= len(data)
        return b"".join(parts)


def unpack(blob: Path, dest: Path) -> None:
    """A layer made by pack() into dest; names that would leave dest are refused."""
    with tarfile.open(blob, "r:") as tar:
        for member in tar:
            target = (dest / member.name).resolve()
            if not member.isfile() or not target.is_relative_to(dest.resolve()):
                raise ApbuildError(f"{blob.name}: member {member.name!r} is not a file of a stage result")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with open(target, "wb") as out:
                if SPARSE_NOTE in member.pax_headers:
                    for start, end in json.loads(member.pax_headers[SPARSE_NOTE]):
                        out.seek(start)
                        left = end - start
                        while left:
                            chunk = source.read(min(left, 1 << 20))
                            if not chunk:
                                raise ApbuildError(f"{blob.name}: {member.name} ends early")
                            out.write(chunk)
                            left -= len(chunk)
                    out.truncate(int(member.pax_headers[SIZE_NOTE]))
                else:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
            target.chmod(member.mode & 0o755)
