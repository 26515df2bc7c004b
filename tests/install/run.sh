#!/usr/bin/env bash
# Tests for install.sh and the release packaging (.github/workflows/package-release.sh).
#
#   bash tests/install/run.sh
#
# Archives are made by the release's own packaging script from a real
# executable: $LANYARD_BIN if set and executable, else target/debug/lanyard if
# it exists, else a small shell script named lanyard that prints a version (the
# one used is printed). Each check gets its own mktemp -d folder and, when it
# downloads, its own HTTP server (tests/install/serve.py) on 127.0.0.1 with an
# ephemeral port, whose JSON ready line is awaited (no sleeps); the server is
# stopped by PID. install.sh runs under dash (or sh when dash is missing), with
# TMPDIR inside the check's folder so that left-over temporary files are seen.
#
# install.sh's test hooks used here: LANYARD_TEST_UNAME_S / LANYARD_TEST_UNAME_M.
#
# Prints PASS/FAIL (or SKIP, with the reason) per check and ends with
# "install tests: N passed, N failed"; exits 1 if any check failed.

set -u
shopt -s nullglob

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
INSTALL_SH=$ROOT/install.sh
PACKAGE=$ROOT/.github/workflows/package-release.sh
WORKFLOW=$ROOT/.github/workflows/release.yml
CROSS_TOML=$ROOT/Cross.toml
SERVE=$HERE/serve.py
REPO_URL=https://github.com/lanyard-ci/lanyard
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

# Loopback downloads must not go through a proxy, and nothing from the
# caller's environment may steer install.sh.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy
unset LANYARD_VERSION LANYARD_BASE_URL LANYARD_INSTALL_DIR LANYARD_TEST_UNAME_S LANYARD_TEST_UNAME_M

PASSED=0
FAILED=0
T=
FIX=
SERVER_PID=
BASE=
ERRS=()
RC=

# ---------------------------------------------------------------- framework

stop_server() {
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null
		wait "$SERVER_PID" 2>/dev/null
		SERVER_PID=
	fi
}

on_exit() {
	local rc=$?
	stop_server
	if [ -n "$T" ]; then rm -rf "$T"; fi
	if [ -n "$FIX" ]; then rm -rf "$FIX"; fi
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM HUP

fail() { ERRS+=("$*"); }

# run CMD...: runs with TMPDIR=$T/tmp and a time limit; output in $T/out, status in RC.
run() {
	TMPDIR=$T/tmp timeout 120 "$@" >"$T/out" 2>&1
	RC=$?
}

expect_rc() { [ "$RC" = "$1" ] || fail "exit status $RC, expected $1"; }
expect_out() { grep -qF -- "$1" "$T/out" || fail "output lacks: $1"; }
expect_not_out() { ! grep -qF -- "$1" "$T/out" || fail "output has: $1"; }
expect_tmp_clean() {
	local left
	left=$(ls -A "$T/tmp")
	[ -z "$left" ] || fail "temporary files left in TMPDIR: $left"
}
# nothing installed: the (pre-created, empty) install folder is still empty
expect_nothing_installed() {
	local left
	left=$(ls -A "$1" 2>/dev/null)
	[ -z "$left" ] || fail "install folder $1 is not empty: $left"
}
# expect_installed DIR SOURCE VERSION_LINE
expect_installed() {
	local dest=$1/lanyard mode ver extra="" f
	if [ ! -f "$dest" ] || [ -h "$dest" ]; then
		fail "$dest is not a regular file"
		return
	fi
	mode=$(stat -c %a "$dest")
	[ "$mode" = 755 ] || fail "$dest has mode $mode, expected 755"
	cmp -s "$2" "$dest" || fail "$dest differs from the packaged binary $2"
	ver=$("$dest" --version 2>&1) || fail "$dest --version failed: $ver"
	[ "$ver" = "$3" ] || fail "$dest --version printed '$ver', expected '$3'"
	expect_out "installed: $dest"
	expect_out "$3"
	for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
		[ "${f##*/}" = lanyard ] || extra="$extra ${f##*/}"
	done
	[ -z "$extra" ] || fail "unexpected files beside lanyard in $1: $extra"
}

# start_server DIR: serves DIR on 127.0.0.1:<ephemeral>; sets BASE.
start_server() {
	local line port
	rm -f "$T/ready"
	mkfifo "$T/ready"
	python3 "$SERVE" --dir "$1" --log "$T/server.log" >"$T/ready" 2>"$T/server.err" &
	SERVER_PID=$!
	# read blocks on the fifo until the server prints its line or exits
	if ! IFS= read -r -t 30 line <"$T/ready"; then
		fail "server did not report ready: $(cat "$T/server.err")"
		return 1
	fi
	# the PID check makes sure that stop_server's kill reaches the server itself
	port=$(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["ready"] is True and d["host"] == "127.0.0.1", d
assert d["pid"] == int(sys.argv[2]), ("pid", d["pid"], sys.argv[2])
print(int(d["port"]))' "$line" "$SERVER_PID") || {
		fail "bad ready line from server: $line"
		return 1
	}
	BASE=http://127.0.0.1:$port
	: >>"$T/server.log"
}

# requested PATH STATUS: the server logged that request
requested() { grep -qxF "GET $1 $2" "$T/server.log"; }

check() {
	local name=$1 fn=$2 e
	T=$(mktemp -d "${TMPDIR:-/tmp}/lanyard-install-test.XXXXXX") || {
		echo "FAIL $name: mktemp -d failed"
		FAILED=$((FAILED + 1))
		return
	}
	mkdir "$T/tmp" "$T/bin"
	: >"$T/out"
	ERRS=()
	BASE=
	"$fn"
	stop_server
	if [ ${#ERRS[@]} -eq 0 ]; then
		echo "PASS $name"
		PASSED=$((PASSED + 1))
	else
		echo "FAIL $name"
		for e in "${ERRS[@]}"; do echo "    - $e"; done
		echo "    last output:"
		sed 's/^/    | /' "$T/out"
		FAILED=$((FAILED + 1))
	fi
	rm -rf "$T"
	T=
}

skip() { echo "SKIP $1: $2"; }

# mkbin DIR TOOL...: DIR holds links to the named tools only (for PATH tests).
mkbin() {
	local dir=$1 tool p
	shift
	mkdir -p "$dir"
	for tool in "$@"; do
		p=$(command -v "$tool") || {
			fail "tool $tool not found for the restricted PATH"
			continue
		}
		ln -s "$p" "$dir/$tool"
	done
}
# what install.sh needs besides a downloader and a SHA-256 tool
BASE_TOOLS=(uname id mktemp rm mkdir cp mv chmod cat tr awk grep tar gzip)

# copy_rel SRC: the check's own copy of a release folder, in $T/rel
copy_rel() { cp -R "$1" "$T/rel"; }

sha_of() { sha256sum <"$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- setup

if command -v dash >/dev/null 2>&1; then
	SH=$(command -v dash)
	SH_NAME=dash
else
	SH=$(command -v sh)
	SH_NAME="sh"
	echo "note: dash is not installed; install.sh runs under $SH (sh) instead"
fi
echo "install.sh runs under: $SH"

for tool in python3 curl tar gzip sha256sum timeout mkfifo stat cmp; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "install tests: cannot run, $tool is missing"
		echo "install tests: 0 passed, 1 failed"
		exit 1
	}
done

case $(uname -m) in
x86_64 | amd64) HOST_TARGET=x86_64-unknown-linux-musl HOST_ENV=() ;;
aarch64 | arm64) HOST_TARGET=aarch64-unknown-linux-musl HOST_ENV=() ;;
*)
	# no release target for this machine: pretend x86_64 to pick the archive
	HOST_TARGET=x86_64-unknown-linux-musl
	HOST_ENV=(LANYARD_TEST_UNAME_M=x86_64)
	;;
esac

FIX=$(mktemp -d "${TMPDIR:-/tmp}/lanyard-install-fixture.XXXXXX") || exit 1
mkdir -p "$FIX/bin" "$FIX/rel" "$FIX/alias" "$FIX/tmp"

fake_lanyard() { # fake_lanyard PATH VERSION_LINE
	printf '#!/bin/sh\necho "%s"\n' "$2" >"$1"
	chmod 0755 "$1"
}

BIN_SRC=
if [ -n "${LANYARD_BIN:-}" ] && [ -f "$LANYARD_BIN" ] && [ -x "$LANYARD_BIN" ]; then
	BIN_SRC=$LANYARD_BIN
	echo "binary under test: \$LANYARD_BIN = $LANYARD_BIN"
elif [ -f "$ROOT/target/debug/lanyard" ] && [ -x "$ROOT/target/debug/lanyard" ]; then
	BIN_SRC=$ROOT/target/debug/lanyard
	echo "binary under test: $BIN_SRC"
fi
if [ -n "$BIN_SRC" ]; then
	# a snapshot, so a concurrent build cannot change it under the tests
	cp "$BIN_SRC" "$FIX/bin/lanyard"
	if ! BIN_VERSION=$("$FIX/bin/lanyard" --version 2>&1); then
		echo "note: $BIN_SRC --version failed ($BIN_VERSION); using the shell-script stand-in"
		BIN_SRC=
	fi
fi
if [ -z "$BIN_SRC" ]; then
	fake_lanyard "$FIX/bin/lanyard" "lanyard 0.0.0-install-test"
	BIN_VERSION="lanyard 0.0.0-install-test"
	echo "binary under test: a shell-script stand-in named lanyard (no \$LANYARD_BIN, no target/debug/lanyard)"
fi
echo "its --version: $BIN_VERSION"

# The release folder: the host target's archive from the binary under test.
if ! TMPDIR=$FIX/tmp sh "$PACKAGE" archive "$HOST_TARGET" "$FIX/bin/lanyard" "$FIX/rel" >"$FIX/pkg.out" 2>&1 ||
	! TMPDIR=$FIX/tmp sh "$PACKAGE" sums "$FIX/rel" "$HOST_TARGET" >>"$FIX/pkg.out" 2>&1; then
	cat "$FIX/pkg.out"
	echo "install tests: packaging the fixture failed"
	echo "install tests: 0 passed, 1 failed"
	exit 1
fi
# A folder with both targets' archives, each a stand-in naming its target.
for t in "${TARGETS[@]}"; do
	mkdir -p "$FIX/alias-src/$t"
	fake_lanyard "$FIX/alias-src/$t/lanyard" "lanyard test $t"
	TMPDIR=$FIX/tmp sh "$PACKAGE" archive "$t" "$FIX/alias-src/$t/lanyard" "$FIX/alias" >>"$FIX/pkg.out" 2>&1 || {
		cat "$FIX/pkg.out"
		echo "install tests: 0 passed, 1 failed"
		exit 1
	}
done
TMPDIR=$FIX/tmp sh "$PACKAGE" sums "$FIX/alias" >>"$FIX/pkg.out" 2>&1 || {
	cat "$FIX/pkg.out"
	echo "install tests: 0 passed, 1 failed"
	exit 1
}
HOST_ARCHIVE=lanyard-$HOST_TARGET.tar.gz

# make_tar OUT KIND [ARG]: hostile or broken archives, written with Python's tarfile.
make_tar() {
	python3 - "$@" <<'EOF'
import io, sys, tarfile
out, kind = sys.argv[1], sys.argv[2]
script = b'#!/bin/sh\necho "lanyard hostile"\n'

def add(tf, name, data, mode=0o755):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    tf.addfile(ti, io.BytesIO(data))

with tarfile.open(out, "w:gz", format=tarfile.GNU_FORMAT) as tf:
    if kind == "dotdot":
        add(tf, "lanyard", script)
        add(tf, "../evil", b"evil\n", 0o644)
    elif kind == "absolute":
        add(tf, "lanyard", script)
        add(tf, sys.argv[3], b"evil\n", 0o644)
    elif kind == "symlink":
        ti = tarfile.TarInfo("lanyard")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/bin/sh"
        tf.addfile(ti)
    elif kind == "no-lanyard":
        add(tf, "README.md", b"readme\n", 0o644)
    elif kind == "twice":
        add(tf, "lanyard", script)
        add(tf, "lanyard", b"#!/bin/sh\necho second\n")
    else:
        sys.exit("unknown kind " + kind)
EOF
}

# ---------------------------------------------------------------- checks: scripts

t_syntax() {
	local s
	for s in "$INSTALL_SH" "$PACKAGE"; do
		sh -n "$s" 2>"$T/out" || fail "sh -n $s: $(cat "$T/out")"
		if command -v dash >/dev/null 2>&1; then
			dash -n "$s" 2>"$T/out" || fail "dash -n $s: $(cat "$T/out")"
		fi
	done
	bash -n "$HERE/run.sh" 2>"$T/out" || fail "bash -n run.sh: $(cat "$T/out")"
	python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$SERVE" 2>"$T/out" ||
		fail "serve.py does not parse: $(cat "$T/out")"
}

t_shellcheck() {
	run shellcheck -s sh "$INSTALL_SH" "$PACKAGE"
	expect_rc 0
	run shellcheck "$HERE/run.sh"
	expect_rc 0
}

# ---------------------------------------------------------------- checks: packaging

t_package_layout() {
	local want listing
	want=$'lanyard\nREADME.md'
	[ -f "$ROOT/LICENSE" ] && want=$'lanyard\nREADME.md\nLICENSE'
	listing=$(tar -tzf "$FIX/rel/$HOST_ARCHIVE") || fail "tar -tzf failed"
	[ "$listing" = "$want" ] || fail "members are [$listing], expected [$want]"
	tar -tvzf "$FIX/rel/$HOST_ARCHIVE" >"$T/out"
	grep -Eq '^-rwxr-xr-x 0/0 .* lanyard$' "$T/out" || fail "lanyard is not -rwxr-xr-x 0/0 in the archive"
	grep -Eq '^-rw-r--r-- 0/0 .* README.md$' "$T/out" || fail "README.md is not -rw-r--r-- 0/0 in the archive"
	mkdir "$T/x"
	tar -xzf "$FIX/rel/$HOST_ARCHIVE" -C "$T/x"
	cmp -s "$T/x/lanyard" "$FIX/bin/lanyard" || fail "the archived lanyard differs from the binary"
	cmp -s "$T/x/README.md" "$ROOT/README.md" || fail "the archived README.md differs from the repo's"
}

t_package_license() {
	mkdir -p "$T/repo"
	echo "readme" >"$T/repo/README.md"
	# without LICENSE: a note, and lanyard + README.md only
	run env LANYARD_REPO_ROOT="$T/repo" SOURCE_DATE_EPOCH=1 sh "$PACKAGE" archive x86_64-unknown-linux-musl "$FIX/alias-src/x86_64-unknown-linux-musl/lanyard" "$T/a"
	expect_rc 0
	expect_out "LICENSE does not exist"
	[ "$(tar -tzf "$T/a/lanyard-x86_64-unknown-linux-musl.tar.gz" | tr '\n' ' ')" = "lanyard README.md " ] ||
		fail "without LICENSE: members are $(tar -tzf "$T/a/lanyard-x86_64-unknown-linux-musl.tar.gz" | tr '\n' ' ')"
	# with LICENSE: included
	echo "license text" >"$T/repo/LICENSE"
	run env LANYARD_REPO_ROOT="$T/repo" SOURCE_DATE_EPOCH=1 sh "$PACKAGE" archive x86_64-unknown-linux-musl "$FIX/alias-src/x86_64-unknown-linux-musl/lanyard" "$T/b"
	expect_rc 0
	expect_not_out "LICENSE does not exist"
	[ "$(tar -tzf "$T/b/lanyard-x86_64-unknown-linux-musl.tar.gz" | tr '\n' ' ')" = "lanyard README.md LICENSE " ] ||
		fail "with LICENSE: members are $(tar -tzf "$T/b/lanyard-x86_64-unknown-linux-musl.tar.gz" | tr '\n' ' ')"
	expect_tmp_clean
}

t_package_reproducible() {
	if ! tar --version 2>/dev/null | grep -q 'GNU tar'; then
		echo "    (not GNU tar: archives are not made reproducible; checking only that both runs succeed)"
	fi
	local bin=$FIX/alias-src/aarch64-unknown-linux-musl/lanyard
	run env SOURCE_DATE_EPOCH=1700000000 sh "$PACKAGE" archive aarch64-unknown-linux-musl "$bin" "$T/a"
	expect_rc 0
	touch "$bin" # a different mtime must not matter
	run env SOURCE_DATE_EPOCH=1700000000 sh "$PACKAGE" archive aarch64-unknown-linux-musl "$bin" "$T/b"
	expect_rc 0
	if tar --version 2>/dev/null | grep -q 'GNU tar'; then
		cmp -s "$T/a/lanyard-aarch64-unknown-linux-musl.tar.gz" "$T/b/lanyard-aarch64-unknown-linux-musl.tar.gz" ||
			fail "two packagings of the same inputs differ"
		python3 - "$T/a/lanyard-aarch64-unknown-linux-musl.tar.gz" >"$T/out" 2>&1 <<'EOF' || fail "member metadata: $(cat "$T/out")"
import sys, tarfile
bad = [(m.name, m.mtime, m.uid, m.gid) for m in tarfile.open(sys.argv[1])
       if (m.mtime, m.uid, m.gid) != (1700000000, 0, 0)]
if bad:
    sys.exit(f"members without mtime SOURCE_DATE_EPOCH and owner 0:0: {bad}")
EOF
	fi
}

t_package_sums() {
	local n
	# sha256sum format, one line per archive and one for install.sh, and it checks
	n=$(grep -cE '^[0-9a-f]{64}  lanyard-(x86_64|aarch64)-unknown-linux-musl\.tar\.gz$' "$FIX/alias/SHA256SUMS")
	[ "$n" = 2 ] || fail "alias SHA256SUMS has $n well-formed archive lines, expected 2: $(cat "$FIX/alias/SHA256SUMS")"
	grep -qE '^[0-9a-f]{64}  install\.sh$' "$FIX/alias/SHA256SUMS" || fail "alias SHA256SUMS has no install.sh line"
	[ "$(wc -l <"$FIX/alias/SHA256SUMS")" -eq 3 ] || fail "alias SHA256SUMS has extra lines"
	(cd "$FIX/alias" && sha256sum -c --quiet SHA256SUMS) >"$T/out" 2>&1 || fail "sha256sum -c fails on the alias SHA256SUMS"
	# install.sh is a release asset: the repo's own, byte for byte
	cmp -s "$FIX/rel/install.sh" "$INSTALL_SH" || fail "the release's install.sh differs from the repo's"
	[ "$(cat "$FIX/rel/SHA256SUMS")" = "$(sha_of "$FIX/rel/$HOST_ARCHIVE")  $HOST_ARCHIVE
$(sha_of "$INSTALL_SH")  install.sh" ] ||
		fail "rel SHA256SUMS is not the archive's and install.sh's lines: $(cat "$FIX/rel/SHA256SUMS")"
	# a named target whose archive is missing is an error, and no SHA256SUMS is written
	mkdir "$T/empty"
	run sh "$PACKAGE" sums "$T/empty" x86_64-unknown-linux-musl
	expect_rc 1
	expect_out "lanyard-x86_64-unknown-linux-musl.tar.gz is missing"
	[ ! -e "$T/empty/SHA256SUMS" ] || fail "SHA256SUMS written although an archive is missing"
}

# which release moves the major tag: finals only, and only the newest of their major
t_major_tag() {
	local args want got rc
	while IFS='|' read -r args want; do
		# shellcheck disable=SC2086 # the cases are plain words
		got=$(sh "$PACKAGE" major-tag $args 2>"$T/err")
		rc=$?
		[ "$rc" = 0 ] || fail "major-tag $args: exit status $rc: $(cat "$T/err")"
		[ "$got" = "$want" ] || fail "major-tag $args printed [$got], expected [$want]"
	done <<'EOF'
v1.2.3|v1
v1.2.3 v1 v1.2.2 v1.2.3 v0.9.0 v2.0.0|v1
v1.10.0 v1.9.9 v1.3.0-rc.1|v1
v0.1.0|v0
v1.2.3-rc.1 v1.0.0|
v1.2.4 v1.3.0|
v1.2.4 v1.2.10|
EOF
	run sh "$PACKAGE" major-tag v1.2
	expect_rc 2
	expect_out 'release tag "v1.2" is not vX.Y.Z'
	run sh "$PACKAGE" major-tag v1.2.4 v1.3.0
	expect_out "v1.3.0 is newer than v1.2.4"
}

t_package_usage() {
	run sh "$PACKAGE" archive sparc64-unknown-linux-musl "$FIX/bin/lanyard" "$T/a"
	expect_rc 2
	expect_out 'unknown target "sparc64-unknown-linux-musl"'
	[ ! -e "$T/a" ] || fail "output folder created for an unknown target"
	run sh "$PACKAGE" frobnicate
	expect_rc 2
	run sh "$PACKAGE" archive x86_64-unknown-linux-musl "$T/no-such-binary" "$T/a"
	expect_rc 1
	expect_out "does not exist"
}

# Cross.toml, the workflow, install.sh and package-release.sh name the same targets;
# the workflow has the shape the brief and the contract ask for.
t_release_config() {
	python3 - "$WORKFLOW" "$CROSS_TOML" "$INSTALL_SH" "$PACKAGE" >"$T/out" 2>&1 <<'EOF' || fail "release configuration: see output"
import re, sys, tomllib, yaml
wf_path, cross_path, install_path, package_path = sys.argv[1:5]
targets = {"x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"}
errors = []
wf = yaml.safe_load(open(wf_path))
on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
if on != {"push": {"tags": ["v*"]}}:
    errors.append(f"trigger is {on!r}, expected push of v* tags only")
if wf.get("permissions") not in ({}, None) and "write" in str(wf.get("permissions")):
    errors.append("top-level permissions grant write")
jobs = wf["jobs"]
writers = [n for n, j in jobs.items() if (j.get("permissions") or {}).get("contents") == "write"]
if writers != ["release", "major-tag"]:
    errors.append(f"jobs with contents: write are {writers}, expected only release and major-tag")
for n, j in jobs.items():
    extra = {k: v for k, v in (j.get("permissions") or {}).items() if k != "contents"}
    if extra:
        errors.append(f"job {n} asks for more than contents: {extra}")
mt = jobs.get("major-tag") or {}
if mt.get("needs") != "release":
    errors.append("major-tag does not wait for the release job (needs: release)")
if mt.get("if") != "${{ !contains(github.ref_name, '-') }}":
    errors.append(f"major-tag runs for prereleases too (if: {mt.get('if')!r})")
mt_run = "\n".join(s.get("run", "") for s in mt.get("steps", []))
for needle in ["package-release.sh major-tag", '-f sha="$GITHUB_SHA"', "git/refs/tags/$major"]:
    if needle not in mt_run:
        errors.append(f"major-tag job lacks {needle!r}")
for n, j in jobs.items():
    if "permissions" not in j:
        errors.append(f"job {n} has no permissions block")
    for s in j.get("steps", []):
        u = s.get("uses")
        if u and not re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", u):
            errors.append(f"job {n}: action {u} is not pinned to a major version")
matrix = set(jobs["build"]["strategy"]["matrix"]["target"])
if matrix != targets:
    errors.append(f"build matrix {matrix} != {targets}")
text = open(wf_path).read()
for needle in ['cross build --release --locked --target "$TARGET" -p lanyard',
               "package-release.sh archive", "package-release.sh sums",
               "softprops/action-gh-release@v2", "dist/SHA256SUMS", "dist/install.sh"]:
    if needle not in text:
        errors.append(f"workflow lacks {needle!r}")
for t in targets:
    if f"dist/lanyard-{t}.tar.gz" not in text:
        errors.append(f"workflow does not upload lanyard-{t}.tar.gz")
cross = tomllib.load(open(cross_path, "rb"))
if set(cross.get("target", {})) != targets:
    errors.append(f"Cross.toml targets {set(cross.get('target', {}))} != {targets}")
cross_version = str(wf["env"]["CROSS_VERSION"])
for t, conf in cross.get("target", {}).items():
    img = conf.get("image", "")
    if not img.endswith(":" + cross_version):
        errors.append(f"Cross.toml image {img} is not tagged {cross_version} (CROSS_VERSION)")
inst = open(install_path).read()
pkg = open(package_path).read()
for t in targets:
    if f"target={t}" not in inst:
        errors.append(f"install.sh does not map to {t}")
    if t not in pkg:
        errors.append(f"package-release.sh does not know {t}")
print("\n".join(errors) if errors else "release configuration consistent")
sys.exit(1 if errors else 0)
EOF
}

# ---------------------------------------------------------------- checks: install.sh usage

t_help() {
	run "$SH" "$INSTALL_SH" --help
	expect_rc 0
	expect_out "Usage: install.sh"
	expect_out "--from-source"
	expect_out "LANYARD_BASE_URL"
	expect_out "LANYARD_INSTALL_DIR"
	run "$SH" "$INSTALL_SH" -h
	expect_rc 0
	expect_out "Usage: install.sh"
	expect_tmp_clean
}

t_bad_option() {
	run "$SH" "$INSTALL_SH" --bogus
	expect_rc 2
	expect_out "unknown option: --bogus"
	run "$SH" "$INSTALL_SH" --dir
	expect_rc 2
	expect_out "--dir needs a value"
	run "$SH" "$INSTALL_SH" extra-argument
	expect_rc 2
	run "$SH" "$INSTALL_SH" --version '1.2.3/../../x'
	expect_rc 2
	expect_out "invalid version"
	run env LANYARD_VERSION= "$SH" "$INSTALL_SH" --version ''
	expect_rc 2
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

t_http_refused() {
	local u
	for u in http://example.com/rel http://127.0.0.1.example.com/rel http://localhost.example.com:80/rel \
		'http://127.0.0.1@example.com/rel' 'http://example.com/rel?x=127.0.0.1' http://10.0.0.1/rel; do
		run "$SH" "$INSTALL_SH" --base-url "$u" --dir "$T/bin"
		expect_rc 2
		case $u in
		*@* | *\?*) expect_out "without user info, query or fragment" ;;
		*) expect_out "refusing plain http base URL $u" && expect_out "the checksum would prove nothing" ;;
		esac
	done
	run env LANYARD_BASE_URL=http://example.com/rel "$SH" "$INSTALL_SH" --dir "$T/bin"
	expect_rc 2
	expect_out "refusing plain http base URL"
	run "$SH" "$INSTALL_SH" --base-url ftp://example.com/rel --dir "$T/bin"
	expect_rc 2
	expect_out "must start with https://"
	# loopback http is accepted: it gets as far as the download (port 1 is closed)
	for u in http://127.0.0.1:1/rel http://localhost:1/rel 'http://[::1]:1/rel' http://LOCALHOST:1/rel; do
		run env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$u" --dir "$T/bin"
		expect_rc 1
		expect_out "could not download $u/SHA256SUMS"
		expect_not_out "refusing plain http"
	done
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

# The default URLs, seen by a stand-in curl that logs its URL and fails.
t_default_urls() {
	mkdir "$T/fake"
	cat >"$T/fake/curl" <<EOF
#!/bin/sh
for a; do last=\$a; done
echo "\$last" >>"$T/urls"
exit 22
EOF
	chmod +x "$T/fake/curl"
	run env PATH="$T/fake:$PATH" "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --dir "$T/bin"
	expect_rc 1
	expect_out "could not download $REPO_URL/releases/latest/download/SHA256SUMS"
	expect_out "refusing to install without a checksum"
	run env PATH="$T/fake:$PATH" "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --version 1.2.3 --dir "$T/bin"
	expect_rc 1
	run env PATH="$T/fake:$PATH" "${HOST_ENV[@]}" LANYARD_VERSION=v1.2.4 "$SH" "$INSTALL_SH" --dir "$T/bin"
	expect_rc 1
	local want
	want="$REPO_URL/releases/latest/download/SHA256SUMS
$REPO_URL/releases/download/v1.2.3/SHA256SUMS
$REPO_URL/releases/download/v1.2.4/SHA256SUMS"
	[ "$(cat "$T/urls" 2>/dev/null)" = "$want" ] || fail "URLs were [$(cat "$T/urls" 2>/dev/null)], expected [$want]"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

# ---------------------------------------------------------------- checks: install

t_good_install() {
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	# a tight umask must not leak into the installed mode
	run sh -c 'umask 077; exec "$@"' sh env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin"
	expect_rc 0
	expect_installed "$T/bin" "$FIX/bin/lanyard" "$BIN_VERSION"
	expect_out "sha256 $(sha_of "$T/rel/$HOST_ARCHIVE") matches SHA256SUMS"
	requested /SHA256SUMS 200 || fail "SHA256SUMS was not downloaded"
	requested "/$HOST_ARCHIVE" 200 || fail "$HOST_ARCHIVE was not downloaded"
	expect_tmp_clean
}

t_env_vars() {
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	run env "${HOST_ENV[@]}" LANYARD_BASE_URL="$BASE//" LANYARD_INSTALL_DIR="$T/bin/sub dir" "$SH" "$INSTALL_SH"
	expect_rc 0
	expect_installed "$T/bin/sub dir" "$FIX/bin/lanyard" "$BIN_VERSION"
	# options win over the environment
	run env "${HOST_ENV[@]}" LANYARD_BASE_URL=http://example.com/x LANYARD_INSTALL_DIR="$T/elsewhere" \
		"$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin2"
	expect_rc 0
	expect_installed "$T/bin2" "$FIX/bin/lanyard" "$BIN_VERSION"
	[ ! -e "$T/elsewhere" ] || fail "LANYARD_INSTALL_DIR was used although --dir was given"
	expect_tmp_clean
}

t_piped() {
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	run env "${HOST_ENV[@]}" "$SH" -s -- --base-url "$BASE" --dir "$T/bin" <"$INSTALL_SH"
	expect_rc 0
	expect_installed "$T/bin" "$FIX/bin/lanyard" "$BIN_VERSION"
	expect_tmp_clean
}

t_upgrade() {
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	fake_lanyard "$T/bin/lanyard" "lanyard 0.0.0-old"
	run env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin"
	expect_rc 0
	expect_installed "$T/bin" "$FIX/bin/lanyard" "$BIN_VERSION"
	# a folder where the binary goes is refused, untouched
	rm -rf "$T/bin2" && mkdir -p "$T/bin2/lanyard"
	run env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin2"
	expect_rc 1
	expect_out "$T/bin2/lanyard is a folder"
	[ "$(ls -A "$T/bin2")" = lanyard ] || fail "files left in $T/bin2: $(ls -A "$T/bin2")"
	expect_tmp_clean
}

t_arch_aliases() {
	copy_rel "$FIX/alias"
	start_server "$T/rel" || return
	local m want
	for m in x86_64 amd64 aarch64 arm64; do
		case $m in
		x86_64 | amd64) want=x86_64-unknown-linux-musl ;;
		*) want=aarch64-unknown-linux-musl ;;
		esac
		rm -rf "${T:?}/bin/$m"
		run env LANYARD_TEST_UNAME_S=Linux LANYARD_TEST_UNAME_M=$m "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin/$m"
		expect_rc 0
		expect_out "test hook LANYARD_TEST_UNAME_M=$m"
		expect_installed "$T/bin/$m" "$FIX/alias-src/$want/lanyard" "lanyard test $want"
	done
	expect_tmp_clean
}

t_unknown_arch() {
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	run env LANYARD_TEST_UNAME_M=sparc64 "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin"
	expect_rc 1
	expect_out 'unsupported architecture "sparc64"'
	expect_out "--from-source"
	[ ! -s "$T/server.log" ] || fail "downloads were attempted: $(cat "$T/server.log")"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

t_non_linux() {
	run env LANYARD_TEST_UNAME_S=Darwin LANYARD_TEST_UNAME_M=arm64 "$SH" "$INSTALL_SH" --base-url https://example.invalid/rel --dir "$T/bin"
	expect_rc 1
	expect_out "no prebuilt lanyard binary for Darwin"
	expect_out "--from-source"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

t_tampered() {
	copy_rel "$FIX/rel"
	local expected actual
	expected=$(sha_of "$T/rel/$HOST_ARCHIVE")
	# one byte changed after SHA256SUMS was written
	python3 - "$T/rel/$HOST_ARCHIVE" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x01
open(p, "wb").write(b)
EOF
	actual=$(sha_of "$T/rel/$HOST_ARCHIVE")
	[ "$expected" != "$actual" ] || fail "tampering did not change the digest"
	start_server "$T/rel" || return
	run env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin"
	expect_rc 1
	expect_out "checksum mismatch for $HOST_ARCHIVE"
	expect_out "expected sha256 $expected"
	expect_out "actual sha256 $actual"
	expect_out "refusing to install"
	requested "/$HOST_ARCHIVE" 200 || fail "the archive was not downloaded (the refusal is not the checksum's)"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

t_missing_line() {
	copy_rel "$FIX/rel"
	# SHA256SUMS names only another archive
	printf '%s  lanyard-riscv64gc-unknown-linux-musl.tar.gz\n' "$(sha_of "$T/rel/$HOST_ARCHIVE")" >"$T/rel/SHA256SUMS"
	start_server "$T/rel" || return
	run env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin"
	expect_rc 1
	expect_out "has no line for $HOST_ARCHIVE"
	expect_out "refusing to install"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

t_missing_sums() {
	copy_rel "$FIX/rel"
	rm "$T/rel/SHA256SUMS"
	start_server "$T/rel" || return
	run env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin"
	expect_rc 1
	expect_out "could not download $BASE/SHA256SUMS"
	expect_out "refusing to install without a checksum"
	requested /SHA256SUMS 404 || fail "SHA256SUMS was not requested"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

# hostile_case KIND MESSAGE [ARG]: a correctly checksummed archive of KIND is refused.
hostile_case() {
	local kind=$1 msg=$2
	rm -rf "${T:?}/rel" "${T:?}/bin" && mkdir -p "$T/rel" "$T/bin"
	make_tar "$T/rel/$HOST_ARCHIVE" "$kind" "${3:-}" || {
		fail "could not build the $kind archive"
		return
	}
	sh "$PACKAGE" sums "$T/rel" >/dev/null 2>&1 || fail "package-release.sh sums failed for $kind"
	start_server "$T/rel" || return
	run env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin"
	stop_server
	expect_rc 1
	expect_out "$msg"
	expect_not_out "checksum mismatch"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

t_dotdot() {
	hostile_case dotdot "has an unsafe member \"../evil\""
	local found
	found=$(find "$T" -name evil)
	[ -z "$found" ] || fail "../evil was written: $found"
}

t_absolute() {
	hostile_case absolute "has an unsafe member \"$T/abs-evil\"" "$T/abs-evil"
	[ ! -e "$T/abs-evil" ] || fail "the absolute member was written"
}

t_not_regular() {
	hostile_case symlink "the lanyard member of $HOST_ARCHIVE is not a regular file"
	hostile_case no-lanyard "has no lanyard member at its root"
	hostile_case twice "has more than one lanyard member"
}

# restricted_install NAME TOOL...: a good install with PATH holding only the tools
restricted_install() {
	local name=$1
	shift
	mkbin "$T/path-$name" "${BASE_TOOLS[@]}" "$@"
	run env PATH="$T/path-$name" "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin/$name"
}

t_tool_fallbacks() {
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	local digest
	digest=$(sha_of "$T/rel/$HOST_ARCHIVE")
	if command -v wget >/dev/null 2>&1; then
		restricted_install wget wget sha256sum
		expect_rc 0
		expect_installed "$T/bin/wget" "$FIX/bin/lanyard" "$BIN_VERSION"
	else
		echo "    (wget not installed: the wget fallback is not exercised)"
	fi
	if command -v shasum >/dev/null 2>&1; then
		restricted_install shasum curl shasum
		expect_rc 0
		expect_out "sha256 $digest matches"
		expect_installed "$T/bin/shasum" "$FIX/bin/lanyard" "$BIN_VERSION"
	else
		echo "    (shasum not installed: the shasum fallback is not exercised)"
	fi
	if command -v openssl >/dev/null 2>&1; then
		restricted_install openssl curl openssl
		expect_rc 0
		expect_out "sha256 $digest matches"
		expect_installed "$T/bin/openssl" "$FIX/bin/lanyard" "$BIN_VERSION"
	else
		echo "    (openssl not installed: the openssl fallback is not exercised)"
	fi
	expect_tmp_clean
}

t_openssl_tampered() {
	copy_rel "$FIX/rel"
	python3 - "$T/rel/$HOST_ARCHIVE" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[-1] ^= 0xFF
open(p, "wb").write(b)
EOF
	start_server "$T/rel" || return
	restricted_install openssl curl openssl
	expect_rc 1
	expect_out "checksum mismatch"
	expect_out "actual sha256 $(sha_of "$T/rel/$HOST_ARCHIVE")"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

t_no_sha_tool() {
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	restricted_install none curl
	expect_rc 1
	expect_out "no SHA-256 tool found (tried sha256sum, shasum, openssl)"
	expect_out "refusing to install"
	[ ! -s "$T/server.log" ] || fail "downloads were attempted without a SHA-256 tool: $(cat "$T/server.log")"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

t_no_downloader() {
	BASE=https://example.invalid/rel
	restricted_install nodl sha256sum
	expect_rc 1
	expect_out "neither curl nor wget is installed"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

# ---------------------------------------------------------------- checks: --from-source

# a stand-in cargo: logs its arguments, one per line, and leaves <root>/bin/lanyard
make_fake_cargo() {
	mkdir -p "$T/fake"
	fake_lanyard "$T/from-source-lanyard" "lanyard 0.0.0-from-source"
	cat >"$T/fake/cargo" <<EOF
#!/bin/sh
printf '%s\n' "\$@" >"$T/cargo.args"
root=
prev=
for a; do
	[ "\$prev" = --root ] && root=\$a
	prev=\$a
done
[ -n "\$root" ] || exit 1
mkdir -p "\$root/bin"
cp "$T/from-source-lanyard" "\$root/bin/lanyard"
EOF
	chmod +x "$T/fake/cargo"
}

# args_match REGEX: the stand-in cargo's arguments, joined by spaces, match
args_match() {
	local got
	got=$(tr '\n' ' ' <"$T/cargo.args" 2>/dev/null)
	[[ $got =~ $1 ]] || fail "cargo arguments were [$got], expected to match [$1]"
}

t_from_source_checkout() {
	make_fake_cargo
	run env PATH="$T/fake:$PATH" "$SH" "$INSTALL_SH" --from-source --dir "$T/bin"
	expect_rc 0
	args_match "^install --locked --path $ROOT/agent --root $T/tmp/lanyard-install\.[A-Za-z0-9]+/cargo-root $"
	expect_installed "$T/bin" "$T/from-source-lanyard" "lanyard 0.0.0-from-source"
	expect_tmp_clean
}

t_from_source_git() {
	make_fake_cargo
	mkdir "$T/elsewhere"
	cp "$INSTALL_SH" "$T/elsewhere/install.sh"
	run env PATH="$T/fake:$PATH" "$SH" "$T/elsewhere/install.sh" --from-source --version 1.2.3 --dir "$T/bin"
	expect_rc 0
	args_match "^install --locked --git $REPO_URL --tag v1\.2\.3 --root $T/tmp/lanyard-install\.[A-Za-z0-9]+/cargo-root lanyard $"
	expect_installed "$T/bin" "$T/from-source-lanyard" "lanyard 0.0.0-from-source"
	# piped (curl | sh): never a checkout, latest is the default branch
	rm -f "$T/bin/lanyard"
	(
		cd "$ROOT" || exit 99
		run env PATH="$T/fake:$PATH" "$SH" -s -- --from-source --dir "$T/bin" <"$INSTALL_SH"
		exit "$RC"
	)
	RC=$?
	expect_rc 0
	expect_installed "$T/bin" "$T/from-source-lanyard" "lanyard 0.0.0-from-source"
	args_match "^install --locked --git $REPO_URL --root $T/tmp/lanyard-install\.[A-Za-z0-9]+/cargo-root lanyard $"
	expect_tmp_clean
}

t_from_source_no_cargo() {
	mkbin "$T/path" "${BASE_TOOLS[@]}" curl sha256sum
	run env PATH="$T/path" "$SH" "$INSTALL_SH" --from-source --dir "$T/bin"
	expect_rc 1
	expect_out "--from-source needs Rust's cargo"
	expect_out "https://rustup.rs"
	expect_nothing_installed "$T/bin"
	expect_tmp_clean
}

# ---------------------------------------------------------------- checks: shells

t_dash() {
	if ! command -v dash >/dev/null 2>&1; then
		echo "    (dash is not installed, so this runs install.sh with sh: $(command -v sh))"
	fi
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	run env "${HOST_ENV[@]}" "$SH" "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin"
	expect_rc 0
	expect_installed "$T/bin" "$FIX/bin/lanyard" "$BIN_VERSION"
	expect_tmp_clean
}

t_other_shells() {
	copy_rel "$FIX/rel"
	start_server "$T/rel" || return
	local s name ran=0
	for s in bash "busybox sh" "bash --posix"; do
		name=${s// /-}
		command -v "${s%% *}" >/dev/null 2>&1 || continue
		# shellcheck disable=SC2086 # $s is a command with arguments
		run env "${HOST_ENV[@]}" $s "$INSTALL_SH" --base-url "$BASE" --dir "$T/bin/$name"
		expect_rc 0
		expect_installed "$T/bin/$name" "$FIX/bin/lanyard" "$BIN_VERSION"
		ran=$((ran + 1))
	done
	[ "$ran" -gt 0 ] || fail "no other shell found (bash runs this file, so bash at least should be there)"
	expect_tmp_clean
}

# ---------------------------------------------------------------- run

check "syntax: sh -n / dash -n (scripts), bash -n (run.sh), ast (serve.py)" t_syntax
if command -v shellcheck >/dev/null 2>&1; then
	check "shellcheck install.sh, package-release.sh, run.sh" t_shellcheck
else
	skip "shellcheck" "shellcheck is not installed"
fi
check "package: archive holds lanyard (0755, root-owned), README.md, LICENSE iff present" t_package_layout
check "package: LICENSE included when present, tolerated when absent" t_package_license
check "package: same inputs give the same archive" t_package_reproducible
check "package: SHA256SUMS in sha256sum format with install.sh, checks, missing archive refused" t_package_sums
check "package: unknown target and missing binary refused" t_package_usage
check "package: major-tag moves vX for the newest final vX.Y.Z only" t_major_tag
if python3 -c 'import yaml, tomllib' 2>/dev/null; then
	check "release config: workflow, Cross.toml, install.sh and packaging agree" t_release_config
else
	skip "release config" "python3 lacks yaml (PyYAML) or tomllib (Python >= 3.11)"
fi
check "--help / -h exit 0" t_help
check "bad options exit 2" t_bad_option
check "http:// to a non-loopback host (and other schemes) refused with the reason; loopback accepted" t_http_refused
check "default URLs: latest and v<version> per the contract" t_default_urls
check "good install: verified, mode 0755 under umask 077, binary runs" t_good_install
check "options from the environment; options win" t_env_vars
check "piped install (sh -s < install.sh)" t_piped
check "upgrade replaces an existing lanyard; a folder named lanyard is refused" t_upgrade
check "arch aliases x86_64/amd64/aarch64/arm64 pick their archive" t_arch_aliases
check "unknown arch (LANYARD_TEST_UNAME_M=sparc64) refused before any download" t_unknown_arch
check "non-Linux OS refused, pointing to --from-source" t_non_linux
check "tampered archive refused, naming both digests; nothing installed" t_tampered
check "archive without a SHA256SUMS line refused" t_missing_line
check "missing SHA256SUMS refused" t_missing_sums
check "archive with a ../evil member refused" t_dotdot
check "archive with an absolute member refused" t_absolute
check "lanyard member that is a symlink, missing, or doubled refused" t_not_regular
check "fallbacks: wget, shasum, openssl" t_tool_fallbacks
if command -v openssl >/dev/null 2>&1; then
	check "openssl fallback still refuses a tampered archive" t_openssl_tampered
else
	skip "openssl fallback with a tampered archive" "openssl is not installed"
fi
check "no SHA-256 tool: refused before downloading" t_no_sha_tool
check "no curl or wget: clear error" t_no_downloader
check "--from-source in a checkout: cargo install --locked --path agent" t_from_source_checkout
check "--from-source elsewhere and piped: cargo install --locked --git ... lanyard" t_from_source_git
check "--from-source without cargo: clear error" t_from_source_no_cargo
check "runs under $SH_NAME" t_dash
check "runs under bash (and busybox sh, bash --posix when present)" t_other_shells

echo "install tests: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
