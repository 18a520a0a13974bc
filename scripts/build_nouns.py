"""Rebuild DOR's shipped noun list and WordNet's licence next to it from a WordNet 3.0 database.

    python scripts/build_nouns.py [--wordnet /usr/share/wordnet]

Debian's ``wordnet-base`` package installs the database under /usr/share/wordnet. Rerunning writes identical bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from calprompt.calibration.nouns import DEFAULT_WORDNET_DIR, build_noun_files

ASSETS = Path(__file__).resolve().parents[1] / "src" / "calprompt" / "calibration" / "assets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=DEFAULT_WORDNET_DIR, help="folder holding index.noun")
    args = parser.parse_args()
    for name, content in build_noun_files(args.wordnet).items():
        (ASSETS / name).write_bytes(content)
        print(f"wrote {ASSETS / name} ({len(content)} bytes)")


if __name__ == "__main__":
    main()
