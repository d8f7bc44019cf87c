"""The image's SBOM: an SPDX 2.3 JSON document listing every Debian package it was cut from.

One SPDX package per lockfile entry (every one is unpacked into the pool the images are
selected from): name, version, source package, the .deb's SHA-256, where it was downloaded,
its purl, and the licences its Debian copyright file declares when that file is
machine-readable (DEP-5); NOASSERTION otherwise. Nothing depends on the clock: `created`
is SOURCE_DATE_EPOCH and the document namespace is derived from the content.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Callable

from . import __version__
from .control import folded, paragraphs
from .lockfile import LockedPackage, Lockfile

NOASSERTION = "NOASSERTION"

# DEP-5 short names (Debian's copyright-format 1.0) whose SPDX identifier differs or that
# are common; GPL-like names with a version are converted by rule in _spdx_id().
_DEP5_TO_SPDX = {
    "expat": "MIT", "mit": "MIT", "isc": "ISC", "zlib": "Zlib", "apache-2.0": "Apache-2.0",
    "apache-2": "Apache-2.0", "artistic": "Artistic-1.0-Perl", "artistic-2.0": "Artistic-2.0",
    "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause", "bsd-4-clause": "BSD-4-Clause",
    "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0", "postgresql": "PostgreSQL", "openssl": "OpenSSL",
    "cc0-1.0": "CC0-1.0", "cc0": "CC0-1.0", "curl": "curl", "bsl-1.0": "BSL-1.0",
    "unicode-dfs-2016": "Unicode-DFS-2016", "x11": "X11", "python-2.0": "Python-2.0",
    "psf-2.0": "PSF-2.0", "ofl-1.1": "OFL-1.1", "sleepycat": "Sleepycat", "0bsd": "0BSD",
    "bzip2-1.0.6": "bzip2-1.0.6", "ijg": "IJG", "libpng": "Libpng", "ntp": "NTP",
    "openldap-2.8": "OLDAP-2.8", "hpnd": "HPND", "gpl": "GPL-1.0-or-later",
    "lgpl": "LGPL-2.0-or-later",
}
_VERSIONED = re.compile(r"^(a?gpl|lgpl|gfdl)-(\d)(?:\.(\d))?(\+)?$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class PackageInfo:
    """What the SBOM says about one .deb."""

    locked: LockedPackage
    download: str        # URL the .deb was fetched from, or NOASSERTION
    license: str         # SPDX licence expression, or NOASSERTION
    license_texts: tuple[tuple[str, str], ...] = ()  # LicenseRef id -> text, for its declaration


def _spdx_id(name: str) -> str:
    """SPDX identifier of one DEP-5 licence name (LicenseRef-... when it has none)."""
    key = name.strip().lower()
    if key in _DEP5_TO_SPDX:
        return _DEP5_TO_SPDX[key]
    if m := _VERSIONED.match(key):
        family = {"agpl": "AGPL", "gpl": "GPL", "lgpl": "LGPL", "gfdl": "GFDL"}[m.group(1).lower()]
        version = f"{m.group(2)}.{m.group(3) or 0}"
        return f"{family}-{version}-{'or-later' if m.group(4) else 'only'}"
    return license_ref(name)


def license_ref(name: str) -> str:
    return "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.]+", "-", name.strip()).strip("-") or "unnamed")


def _expression(dep5: str) -> str:
    """A DEP-5 License: value ("GPL-2+ or Artistic", "A, and B") as an SPDX expression.
    DEP-5 binds 'and' tighter than 'or' as SPDX does; a comma separates whole groups."""
    groups = []
    for group in re.split(r"\s*,\s*(?:and\s+)?", dep5.strip()):
        if not group:
            continue
        terms = re.split(r"\s+(and|or)\s+", group, flags=re.IGNORECASE)
        out = []
        for i, term in enumerate(terms):
            if i % 2:
                out.append(term.upper())
            else:
                # "GPL-2+ with OpenSSL exception": no SPDX exception id to trust; one LicenseRef.
                out.append(license_ref(term) if " with " in f" {term.lower()} " else _spdx_id(term))
        groups.append(" ".join(out))
    if len(groups) == 1:
        return groups[0]
    return " AND ".join(f"({g})" for g in groups)


def licenses_of(copyright_text: str | None) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(SPDX expression, LicenseRef texts) from a Debian copyright file; NOASSERTION when
    the file is missing or not machine-readable (no DEP-5 Format: header)."""
    if not copyright_text:
        return NOASSERTION, ()
    # Field names lower-cased, values' lines unindented: what the rules below compare.
    stanzas = [{k.lower(): folded(v) for k, v in p.items()} for p in paragraphs(copyright_text)]
    if not stanzas or "copyright-format" not in stanzas[0].get("format", "") \
            and "dep5" not in stanzas[0].get("format", "").lower():
        return NOASSERTION, ()
    used: list[str] = []
    texts: dict[str, str] = {}
    for p in stanzas:
        if "license" not in p:
            continue
        name, _, text = p["license"].partition("\n")
        if not name.strip():
            continue
        # Header and Files stanzas say what applies; stand-alone ones hold the texts.
        if "files" in p or p is stanzas[0]:
            expr = _expression(name)
            if expr not in used:
                used.append(expr)
        if text.strip():
            texts.setdefault(license_ref(name), text.replace("\n.\n", "\n\n").strip())
    if not used:
        return NOASSERTION, ()
    expression = used[0] if len(used) == 1 else " AND ".join(f"({e})" if " " in e else e for e in used)
    refs = sorted(set(re.findall(r"LicenseRef-[A-Za-z0-9.-]+", expression)))
    return expression, tuple((r, texts.get(r, "")) for r in refs)


def _spdx_ref(prefix: str, text: str) -> str:
    return f"SPDXRef-{prefix}-" + re.sub(r"[^A-Za-z0-9.-]+", "-", text)


def document(name: str, title: str, version: str, arch: str, lock: Lockfile, infos: list[PackageInfo],
             epoch: int) -> dict:
    """The SPDX 2.3 document as a JSON-ready dict."""
    created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    image_id = _spdx_ref("Image", name)
    packages = [{
        "SPDXID": image_id,
        "name": name,
        "versionInfo": version,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "comment": f"{title} image built by apbuild for {arch} from Debian packages"
                   f"{' and PyPI distributions' if lock.venvs else ''} "
                   f"(lockfile SHA-256 {lock.digest})",
    }]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": image_id}]
    extracted: dict[str, str] = {}
    for info in sorted(infos, key=lambda i: i.locked.name):
        p = info.locked
        spdx_id = _spdx_ref("Package-deb", f"{p.name}-{p.arch}")
        packages.append({
            "SPDXID": spdx_id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": "Organization: Debian",
            "downloadLocation": info.download,
            "filesAnalyzed": False,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "sourceInfo": f"built from the Debian source package {p.source_package}",
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": info.license,
            "copyrightText": NOASSERTION,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": f"pkg:deb/debian/{p.name}@{p.version.replace(':', '%3A')}"
                                    f"?arch={p.arch}&distro=debian-12",
            }],
        })
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id})
        for ref, text in info.license_texts:
            extracted.setdefault(ref, text or f"The licence Debian's copyright file of {p.name} "
                                              f"names {ref[len('LicenseRef-'):]!r}; see "
                                              f"/usr/share/doc/{p.name}/copyright in the package.")
    for venv in lock.venvs:
        for d in sorted(venv.dists, key=lambda d: d.name.lower()):
            spdx_id = _spdx_ref("Package-pypi", f"{d.name}-{d.version}")
            packages.append({
                "SPDXID": spdx_id,
                "name": d.name,
                "versionInfo": d.version,
                "downloadLocation": d.url,
                "filesAnalyzed": False,
                "checksums": [{"algorithm": "SHA256", "checksumValue": d.sha256}],
                "sourceInfo": f"from PyPI ({d.filename}), installed into the virtualenv {venv.path}",
                "licenseConcluded": NOASSERTION,
                "licenseDeclared": NOASSERTION,
                "copyrightText": NOASSERTION,
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                  "referenceLocator": f"pkg:pypi/{_pypi_name(d.name)}@{d.version}"}],
            })
            relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                                  "relatedSpdxElement": spdx_id})
    body = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{name}-{version}",
        "creationInfo": {"created": created, "creators": [f"Tool: apbuild-{__version__}"]},
        "documentDescribes": [image_id],
        "packages": packages,
        "relationships": relationships,
        "hasExtractedLicensingInfos": [{"licenseId": ref, "extractedText": text, "name": ref[len("LicenseRef-"):]}
                                       for ref, text in sorted(extracted.items())],
    }
    content = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {**body, "documentNamespace": f"https://spdx.org/spdxdocs/{name}-{version}-{content}"}


def _pypi_name(name: str) -> str:
    """The purl spec's PyPI name: lower case, runs of '-', '_', '.' as '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dumps(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def package_infos(lock: Lockfile, download_url: Callable[[LockedPackage], str],
                  copyright_of: Callable[[LockedPackage], str | None]) -> list[PackageInfo]:
    out = []
    for p in lock.packages:
        expression, texts = licenses_of(copyright_of(p))
        out.append(PackageInfo(p, download_url(p), expression, texts))
    return out
