#!/usr/bin/env python3
"""Writes pii_names.txt, the person names `citadel-bench pii` puts in its table.

Source: the US Census Bureau's 1990 name frequency lists (public domain), as
shipped in the PyPI package `names` 0.3.0 (MIT): dist.male.first,
dist.female.first and dist.all.last. They are a different source from the
Faker lists citadel-pii detects with, so the bench measures recall on names
the detector was not built from (the two overlap where common names do).

Usage: pip download --no-deps names==0.3.0 && tar xzf names-0.3.0.tar.gz
       python3 pii_names.py names-0.3.0/names > pii_names.txt
Kept: the 600 most frequent male and female given names and the 3000 most
frequent surnames, title case, one per line as `given:NAME` / `surname:NAME`.
"""
import sys
from pathlib import Path


def top(path: Path, n: int) -> list[str]:
    out = []
    for line in path.read_text().splitlines()[:n]:
        word = line.split()[0]
        out.append(word[:1] + word[1:].lower())
    return out


def main() -> None:
    d = Path(sys.argv[1])
    given = top(d / "dist.male.first", 600) + top(d / "dist.female.first", 600)
    seen = set()
    for g in given:
        if g not in seen:
            seen.add(g)
            print(f"given:{g}")
    for s in top(d / "dist.all.last", 3000):
        print(f"surname:{s}")


if __name__ == "__main__":
    main()
