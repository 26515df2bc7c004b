#!/usr/bin/env python3
"""The workspace's `rust-version` is true for the lockfile: no locked crate
declares a higher one (cargo would refuse to build it with ours), and the
README's prerequisites name the same version. Reads what cargo itself
reports (`cargo metadata --locked`, offline when the registry cache has
everything). Our own code is held to it by clippy's `incompatible_msrv`,
which `cargo clippy -D warnings` runs against the same `rust-version`."""
import json
import os
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ver(s):
    parts = [int(p) for p in s.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def metadata():
    cmd = ["cargo", "metadata", "--format-version", "1", "--locked"]
    for extra in (["--offline"], []):
        r = subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True)
        if r.returncode == 0:
            return json.loads(r.stdout)
    sys.exit(f"check-msrv: cargo metadata failed:\n{r.stderr}")


def main():
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        ours_s = tomllib.load(f)["workspace"]["package"]["rust-version"]
    ours = ver(ours_s)
    meta = metadata()
    members = set(meta["workspace_members"])
    declared = sorted(
        ((ver(p["rust_version"]), p["name"], p["version"])
         for p in meta["packages"]
         if p.get("rust_version") and p["id"] not in members),
        reverse=True,
    )
    problems = []
    above = [d for d in declared if d[0] > ours]
    for v, name, version in above:
        problems.append(
            f"{name} {version} (locked) declares rust-version "
            f"{'.'.join(map(str, v))}, above ours ({ours_s}): raise "
            "[workspace.package] rust-version in Cargo.toml and the README's "
            "prerequisites, or lock an older version")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    if f"Rust {ours_s}" not in readme:
        problems.append(
            f"README.md does not say `Rust {ours_s}` (Cargo.toml's rust-version) "
            "in its prerequisites")
    top = declared[0] if declared else None
    if top:
        at_top = [f"{n} {v}" for (r, n, v) in declared if r == top[0]]
        print(f"check-msrv: rust-version {ours_s}; the highest a locked crate "
              f"declares is {'.'.join(map(str, top[0]))} ({', '.join(at_top)}); "
              f"{len(meta['packages'])} packages")
        if top[0] < ours:
            print(f"check-msrv: note: ours is above every locked crate's; "
                  f"{'.'.join(map(str, top[0]))} might do, untested")
    for p in problems:
        print(f"check-msrv: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
