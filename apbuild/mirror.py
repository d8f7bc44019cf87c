"""Where Debian packages come from: the host's apt sources, or a setting.

The mirror is never written into apbuild: the build uses the archive the host's apt
already trusts, or APBUILD_MIRROR / APBUILD_SECURITY_MIRROR when set.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from .control import paragraphs
from .errors import ApbuildError


@dataclasses.dataclass(frozen=True)
class Source:
    uri: str          # archive base, no trailing slash
    suite: str        # bookworm, bookworm-updates, bookworm-security
    component: str = "main"


def _suites(release: str) -> tuple[str, ...]:
    return (release, f"{release}-updates", f"{release}-security")


def _one_line(text: str) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options like [arch=amd64 signed-by=...]
        parts = line.split()
        if len(parts) >= 4:
            out.append((parts[1], [parts[2]], parts[3:]))
    return out


def _deb822(text: str) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for fields in paragraphs(text):
        if "deb" not in fields.get("Types", "").split() or fields.get("Enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("URIs", "").split():
            out.append((uri, fields.get("Suites", "").split(), fields.get("Components", "").split()))
    return out


def sources(release: str = "bookworm", apt_dir: Path = Path("/etc/apt")) -> tuple[Source, ...]:
    suites = _suites(release)
    if mirror := os.environ.get("APBUILD_MIRROR"):
        found = [Source(mirror.rstrip("/"), s) for s in suites[:2]]
        if security := os.environ.get("APBUILD_SECURITY_MIRROR"):
            found.append(Source(security.rstrip("/"), suites[2]))
        return tuple(found)
    files = [apt_dir / "sources.list"] + sorted((apt_dir / "sources.list.d").glob("*"))
    found = []
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        entries = _deb822(text) if path.suffix == ".sources" else _one_line(text) if path.suffix in (".list", "") else []
        for uri, entry_suites, components in entries:
            for suite in entry_suites:
                if suite in suites and "main" in components:
                    source = Source(uri.rstrip("/"), suite)
                    if source not in found:
                        found.append(source)
    if not any(s.suite == release for s in found):
        read = ", ".join(str(p) for p in files if p.is_file()) or f"nothing under {apt_dir}"
        raise ApbuildError(f"no Debian '{release}' archive with 'main' in the apt sources ({read}); "
                           f"set APBUILD_MIRROR to a Debian archive URL")
    return tuple(found)
