"""The SPDX SBOM: DEP-5 licences read right, and the document valid by SPDX's own library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apbuild import sbom
from apbuild.lockfile import LockedPackage, Lockfile

DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: lib/*
Copyright: 2021 Other
License: LGPL-2.1+ or Artistic

Files: contrib/*
Copyright: 2022 Third
License: Beerware-ish

Files: doc/*
Copyright: 2022 Fourth
License: GPL-3+ with Bison exception

License: Beerware-ish
 As long as you retain this notice you can do whatever you want.
 .
 Buy me a beer.
"""


def test_dep5_licences_become_an_spdx_expression():
    expression, texts = sbom.licenses_of(DEP5)
    assert expression == ("GPL-2.0-or-later AND (LGPL-2.1-or-later OR Artistic-1.0-Perl) AND "
                          "LicenseRef-Beerware-ish AND LicenseRef-GPL-3-with-Bison-exception")
    refs = dict(texts)
    assert refs["LicenseRef-Beerware-ish"].startswith("As long as you retain")
    assert refs["LicenseRef-GPL-3-with-Bison-exception"] == ""  # no text given: a note is used


@pytest.mark.parametrize("text", [None, "", "This package was debianized by X.\nLicense: GPL\n"])
def test_missing_or_free_form_copyright_is_noassertion(text):
    assert sbom.licenses_of(text) == (sbom.NOASSERTION, ())


def fixture_lock() -> Lockfile:
    def pkg(name: str, version: str, source: str) -> LockedPackage:
        return LockedPackage(name=name, version=version, arch="amd64", suite="bookworm",
                             filename=f"pool/main/{name[0]}/{source}/{name}_{version}_amd64.deb",
                             size=1000, sha256=(name.encode().hex() * 64)[:64], source_package=source)
    return Lockfile("amd64", "Sat, 01 Jan 2000 00:00:00 UTC", ("demo",), (),
                    (pkg("demo", "1:2.0-1", "demo-src"), pkg("libdemo+1", "2.0-1", "demo-src"),
                     pkg("plain", "1.0", "plain")))


def fixture_document() -> dict:
    lock = fixture_lock()
    copyrights = {"demo": DEP5, "libdemo+1": DEP5, "plain": None}
    infos = sbom.package_infos(lock, lambda p: f"http://archive.invalid/debian/{p.filename}",
                               lambda p: copyrights[p.name])
    return sbom.document("app-platform-test", "App Platform", "140001", "amd64", lock, infos, 946684800)


def test_document_lists_every_package_deterministically():
    doc = fixture_document()
    assert doc == fixture_document()
    assert doc["creationInfo"]["created"] == "2000-01-01T00:00:00Z"
    debs = {p["name"]: p for p in doc["packages"][1:]}
    assert sorted(debs) == ["demo", "libdemo+1", "plain"]
    demo = debs["demo"]
    assert demo["versionInfo"] == "1:2.0-1"
    assert demo["checksums"] == [{"algorithm": "SHA256", "checksumValue": fixture_lock().packages[0].sha256}]
    assert "demo-src" in demo["sourceInfo"]
    assert demo["downloadLocation"].endswith("pool/main/d/demo-src/demo_1:2.0-1_amd64.deb")
    assert debs["plain"]["licenseDeclared"] == "NOASSERTION"
    # The namespace follows the content: another package version, another namespace.
    lock = fixture_lock()
    changed = Lockfile(lock.arch, lock.date, lock.requested, lock.excluded,
                       lock.packages[:2] + (dataclass_replace(lock.packages[2], version="1.1"),))
    other = sbom.document("app-platform-test", "App Platform", "140001", "amd64", changed,
                          sbom.package_infos(changed, lambda p: "NOASSERTION", lambda p: None), 946684800)
    assert other["documentNamespace"] != doc["documentNamespace"]


def dataclass_replace(obj, **changes):
    import dataclasses
    return dataclasses.replace(obj, **changes)


def validate(path: Path) -> list[str]:
    parse = pytest.importorskip("spdx_tools.spdx.parser.parse_anything",
                                reason="spdx-tools comes from PyPI only (bookworm has no package)")
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    return [m.validation_message for m in validate_full_spdx_document(parse.parse_file(str(path)))]


def test_fixture_document_is_valid_spdx(tmp_path):
    path = tmp_path / "demo.spdx.json"
    path.write_bytes(sbom.dumps(fixture_document()))
    assert validate(path) == []


def test_validator_rejects_a_broken_document(tmp_path):
    """The validation above can fail: an undeclared LicenseRef is reported."""
    doc = fixture_document()
    doc["hasExtractedLicensingInfos"] = []
    path = tmp_path / "broken.spdx.json"
    path.write_text(json.dumps(doc))
    assert validate(path) != []
