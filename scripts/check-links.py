#!/usr/bin/env python3
"""Every file the documentation points to is in the repository: each
relative markdown link `[text](path)` and each backticked repo path
(`examples/x.toml`, `agent/tests/doctor.rs`) in README.md and docs/*.md
resolves, and no link leaves the repository. Backticked words count as
paths when their first segment is a top-level entry of the repository, so
`auth/<mount>/login` or `/proc/<pid>/fd` are not taken for files."""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
PATHLIKE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.*-]+)*/?$")


def docs():
    yield os.path.join(ROOT, "README.md")
    yield from sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def problems_in(path, top):
    rel = os.path.relpath(path, ROOT)
    base = os.path.dirname(path)
    out = []
    fence = False
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            t = target.split("#", 1)[0]
            full = os.path.normpath(os.path.join(base, t))
            if not (full + os.sep).startswith(ROOT + os.sep) and full != ROOT:
                out.append(f"{rel}:{n}: link {target} leaves the repository")
            elif not os.path.exists(full):
                out.append(f"{rel}:{n}: link {target}: no such file in the repository")
        if fence:
            continue
        for word in CODE.findall(line):
            if not PATHLIKE.match(word) or "/" not in word.rstrip("/"):
                continue
            if word.split("/", 1)[0] not in top:
                continue
            full = os.path.join(ROOT, word)
            if "*" in word:
                if not glob.glob(full):
                    out.append(f"{rel}:{n}: `{word}` matches no file in the repository")
            elif not os.path.exists(full):
                out.append(f"{rel}:{n}: `{word}`: no such file in the repository (paths are from the repository root)")
    return out


def main():
    top = {e for e in os.listdir(ROOT) if e not in ("target", ".git")}
    found = [p for d in docs() for p in problems_in(d, top)]
    for p in found:
        print(f"check-links: {p}", file=sys.stderr)
    print(f"check-links: {'ok' if not found else f'{len(found)} broken'} "
          f"(README.md and docs/*.md)")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
