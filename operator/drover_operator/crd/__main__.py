"""`python -m drover_operator.crd [--check] [--dir crds]`: write or verify the CRD files.

`make crds` runs this to regenerate `crds/`; `--check` (CI) exits 1 with a diff when the
committed files differ from what the models generate.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from drover_operator.crd.definitions import generated_files


def check(directory: Path) -> list[str]:
    """Unified diffs between the files on disk and the generated ones (empty when equal)."""
    diffs = []
    for name, expected in generated_files().items():
        path = directory / name
        actual = path.read_text(encoding="utf-8") if path.exists() else ""
        if actual != expected:
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        actual.splitlines(keepends=True),
                        expected.splitlines(keepends=True),
                        fromfile=f"{path} (committed)",
                        tofile=f"{path} (generated)",
                    )
                )
            )
    return diffs


def write(directory: Path) -> list[Path]:
    """Write the generated files; return the ones whose content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, content in generated_files().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drover_operator.crd",
        description="Generate the Drover CRDs from the pydantic models.",
    )
    parser.add_argument(
        "--dir", type=Path, default=Path("crds"), help="output directory (default: ./crds)"
    )
    parser.add_argument(
        "--check", action="store_true", help="verify the files are up to date; write nothing"
    )
    args = parser.parse_args(argv)
    if args.check:
        diffs = check(args.dir)
        if diffs:
            sys.stdout.write("".join(diffs))
            print(
                f"error: CRDs in {args.dir}/ are out of date with the models; run `make crds`",
                file=sys.stderr,
            )
            return 1
        print(f"CRDs in {args.dir}/ are up to date")
        return 0
    for path in write(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
