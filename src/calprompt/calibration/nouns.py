"""The shipped list of English nouns that DOR samples its outlier class names from, and how it is built.

Built from WordNet 3.0's noun index (``index.noun``, as installed by Debian's ``wordnet-base`` under
``/usr/share/wordnet``): every noun lemma with at least one sense tagged in the SemCor concordance
(``tagsense_cnt > 0``, i.e. nouns in actual use rather than the whole dictionary), underscores turned into spaces,
kept when it is lowercase letters with inner spaces, hyphens or apostrophes, at least 3 characters long, sorted and
deduplicated. ``scripts/build_nouns.py`` rewrites the shipped files byte for byte from the same database; WordNet's
licence, which must accompany every copy, is extracted verbatim from the index's own header into
``assets/WORDNET_LICENSE.txt``.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

NOUNS_FILE = "wordnet_nouns.txt"
LICENSE_FILE = "WORDNET_LICENSE.txt"
DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
_HEADER = (
    "# Nouns of WordNet 3.0 with a sense tagged in SemCor; built by scripts/build_nouns.py.\n"
    "# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Licence: WORDNET_LICENSE.txt\n"
)
_WORD = re.compile(r"[a-z][a-z' -]*[a-z]")


def _entries(index_text: str) -> tuple[list[str], list[str]]:
    """The licence lines (header lines start with two spaces and a line number) and the lemma lines."""
    licence, lemmas = [], []
    for line in index_text.splitlines():
        if line.startswith("  "):
            licence.append(re.sub(r"^\s+\d+\s?", "", line).rstrip())
        elif line.strip():
            lemmas.append(line)
    return licence, lemmas


def _tagged_noun(line: str) -> str | None:
    """The lemma of an ``index.noun`` line if it has a SemCor-tagged sense and passes the spelling filter."""
    fields = line.split()
    pointer_count = int(fields[3])
    tagged = int(fields[5 + pointer_count])  # after lemma, pos, synset_cnt, p_cnt, pointers, sense_cnt
    word = fields[0].replace("_", " ")
    return word if tagged > 0 and len(word) >= 3 and _WORD.fullmatch(word) else None


def build_noun_files(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR) -> dict[str, bytes]:
    """The shipped files' exact bytes, ``{file name: content}``, from the WordNet database in ``wordnet_dir``."""
    index = Path(wordnet_dir) / "index.noun"
    if not index.is_file():
        raise FileNotFoundError(
            f"{index} not found: install WordNet's database (Debian: apt-get install wordnet-base) or pass its folder."
        )
    licence, lines = _entries(index.read_text(encoding="utf-8"))
    nouns = sorted({noun for noun in map(_tagged_noun, lines) if noun})
    return {
        NOUNS_FILE: (_HEADER + "\n".join(nouns) + "\n").encode("utf-8"),
        LICENSE_FILE: ("\n".join(licence).strip("\n") + "\n").encode("utf-8"),
    }


@cache
def wordnet_nouns() -> tuple[str, ...]:
    """The shipped noun list (about 11,000 nouns), in sorted order."""
    text = resources.files("calprompt.calibration").joinpath("assets", NOUNS_FILE).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line and not line.startswith("#"))
