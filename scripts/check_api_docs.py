"""Check that the built documentation site documents every public name of the packages the API reference covers.

    python scripts/check_api_docs.py [--site site]

Run after ``mkdocs build``. A package's public names are its ``__all__`` (read from the source, nothing imported);
each must have its anchor (``id="calprompt.metrics.evaluate"``) on the package's API page. Exit code 1 lists the
missing names.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> its API page under the site folder
PAGES = {
    "calprompt.metrics": "api/metrics/index.html",
    "calprompt.calibration": "api/calibration/index.html",
    "calprompt.methods": "api/methods/index.html",
    "calprompt.clip": "api/clip/index.html",
}


def public_names(package: str) -> list[str]:
    """The package's ``__all__``, read from its ``__init__.py``."""
    init = ROOT / "src" / Path(*package.split(".")) / "__init__.py"
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit(f"{init}: expected an `__all__` list, found none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="the folder `mkdocs build` wrote")
    args = parser.parse_args()
    missing = []
    total = 0
    for package, page in PAGES.items():
        path = args.site / page
        if not path.is_file():
            raise SystemExit(f"{path}: expected the API page of {package}; run `mkdocs build` first")
        html = path.read_text()
        for name in public_names(package):
            total += 1
            if f'id="{package}.{name}"' not in html:
                missing.append(f"{package}.{name} (expected on {page})")
    if missing:
        print("API reference lacks:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    print(f"API reference: all {total} public names of {', '.join(PAGES)} documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
