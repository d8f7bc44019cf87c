"""Debian's control-file format (deb822), read with python-debian: Packages indexes, apt's
.sources files and DEP-5 copyright files all come through here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # imported where parsed: a build with everything cached parses nothing
    from debian.deb822 import Deb822


def paragraphs(text: str) -> Iterator[Deb822]:
    """The paragraphs of a deb822 text, in order; comment lines and lines that are not
    fields are skipped. Field names ignore case; a value keeps its continuation lines."""
    from debian.deb822 import Deb822

    # use_apt_pkg=False: the same parser everywhere, with or without python3-apt.
    return Deb822.iter_paragraphs(text.splitlines(), use_apt_pkg=False)


def fields(text: str) -> Deb822:
    """The one paragraph of a deb822 text (a Packages stanza)."""
    from debian.deb822 import Deb822

    return Deb822(text.splitlines())


def folded(value: str) -> str:
    """A multi-line value with each line's indentation taken off (DEP-5 license texts)."""
    return "\n".join(line.strip() for line in value.split("\n"))
