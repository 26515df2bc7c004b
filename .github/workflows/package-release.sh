#!/bin/sh
# package-release.sh: make the release assets of docs/lifecycle-contract.md.
# The release workflow (release.yml) and tests/install/run.sh both call it, so
# the tests check the archives the release ships.
#
#   package-release.sh archive TARGET BINARY OUTDIR
#       writes OUTDIR/lanyard-TARGET.tar.gz holding, at its root, `lanyard`
#       (BINARY, mode 0755), README.md and LICENSE (LICENSE only if the repo
#       has one: a note on stderr says when it is left out).
#   package-release.sh sums OUTDIR [TARGET...]
#       writes OUTDIR/SHA256SUMS (sha256sum format) for the given targets'
#       archives, each of which must exist; with no TARGET, for every
#       lanyard-*.tar.gz in OUTDIR.
#
# Environment:
#   LANYARD_REPO_ROOT  where README.md and LICENSE come from (default: the
#                      checkout holding this script)
#   SOURCE_DATE_EPOCH  mtime of the archive members (default: the last
#                      commit's time, else 0), so that archives are reproducible
#
# Exit codes: 0 done, 1 failure, 2 usage.

set -u

PROG=package-release
TARGETS="x86_64-unknown-linux-musl aarch64-unknown-linux-musl"

die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}
usage_error() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	printf 'usage: %s archive TARGET BINARY OUTDIR\n       %s sums OUTDIR [TARGET...]\n' "$0" "$0" >&2
	exit 2
}

check_target() {
	for t in $TARGETS; do
		[ "$1" = "$t" ] && return 0
	done
	usage_error "unknown target \"$1\" (the release targets are: $TARGETS)"
}

STAGE=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ -n "$STAGE" ]; then rm -rf "$STAGE"; fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

script_dir=$(cd "$(dirname "$0")" && pwd) || die "cannot find the folder of $0"
repo_root=${LANYARD_REPO_ROOT:-$(cd "$script_dir/../.." && pwd)}

make_archive() {
	target=$1
	binary=$2
	outdir=$3
	check_target "$target"
	[ -f "$binary" ] || die "binary $binary does not exist or is not a regular file"
	[ -x "$binary" ] || die "binary $binary is not executable"
	[ -f "$repo_root/README.md" ] || die "$repo_root/README.md is missing"
	mkdir -p "$outdir" || die "cannot create $outdir"

	STAGE=$(mktemp -d "${TMPDIR:-/tmp}/lanyard-package.XXXXXX") || die "mktemp -d failed"
	mkdir "$STAGE/root" || die "cannot create $STAGE/root"
	cp "$binary" "$STAGE/root/lanyard" || die "cannot copy $binary"
	chmod 0755 "$STAGE/root/lanyard" || die "chmod failed"
	cp "$repo_root/README.md" "$STAGE/root/README.md" || die "cannot copy README.md"
	chmod 0644 "$STAGE/root/README.md" || die "chmod failed"
	members="lanyard README.md"
	if [ -f "$repo_root/LICENSE" ]; then
		cp "$repo_root/LICENSE" "$STAGE/root/LICENSE" || die "cannot copy LICENSE"
		chmod 0644 "$STAGE/root/LICENSE" || die "chmod failed"
		members="$members LICENSE"
	else
		printf '%s: note: %s/LICENSE does not exist; the archive holds lanyard and README.md only\n' \
			"$PROG" "$repo_root" >&2
	fi

	epoch=${SOURCE_DATE_EPOCH:-}
	if [ -z "$epoch" ]; then
		epoch=$(git -C "$repo_root" log -1 --format=%ct 2>/dev/null) || epoch=0
		[ -n "$epoch" ] || epoch=0
	fi
	case $epoch in
	*[!0-9]*) die "SOURCE_DATE_EPOCH must be a number of seconds, got \"$epoch\"" ;;
	esac

	# GNU tar: fixed owner, order and mtime, so the same inputs give the same
	# archive. Other tars: the plain form (owner and mtime from the files).
	# $members is a fixed list of plain names, split on purpose.
	if tar --version 2>/dev/null | grep -q 'GNU tar'; then
		# shellcheck disable=SC2086
		tar --format=ustar --owner=0 --group=0 --numeric-owner \
			--mtime="@$epoch" --sort=name \
			-cf "$STAGE/archive.tar" -C "$STAGE/root" $members ||
			die "tar failed"
	else
		# shellcheck disable=SC2086
		(cd "$STAGE/root" && tar -cf "$STAGE/archive.tar" $members) || die "tar failed"
	fi
	out=$outdir/lanyard-$target.tar.gz
	gzip -n <"$STAGE/archive.tar" >"$out.tmp" || die "gzip failed"
	mv -f "$out.tmp" "$out" || die "cannot move $out.tmp into place"
	printf '%s\n' "$out"
}

make_sums() {
	outdir=$1
	shift
	[ -d "$outdir" ] || die "$outdir is not a folder"
	cd "$outdir" || die "cannot enter $outdir"
	if [ $# -gt 0 ]; then
		files=
		for t in "$@"; do
			check_target "$t"
			[ -f "lanyard-$t.tar.gz" ] || die "$outdir/lanyard-$t.tar.gz is missing"
			files="$files lanyard-$t.tar.gz"
		done
	else
		files=$(LC_ALL=C ls lanyard-*.tar.gz 2>/dev/null) || files=
		[ -n "$files" ] || die "no lanyard-*.tar.gz in $outdir"
	fi
	# the names are lanyard-<target>.tar.gz with checked targets: no spaces
	# shellcheck disable=SC2086
	sha256sum $files >SHA256SUMS.tmp || die "sha256sum failed"
	mv -f SHA256SUMS.tmp SHA256SUMS || die "cannot move SHA256SUMS into place"
	sha256sum -c --quiet SHA256SUMS || die "SHA256SUMS does not check against the archives"
	cat SHA256SUMS
}

[ $# -ge 1 ] || usage_error "missing command"
cmd=$1
shift
case $cmd in
archive)
	[ $# -eq 3 ] || usage_error "archive takes TARGET BINARY OUTDIR"
	make_archive "$1" "$2" "$3"
	;;
sums)
	[ $# -ge 1 ] || usage_error "sums takes OUTDIR [TARGET...]"
	make_sums "$@"
	;;
-h | --help)
	sed -n '2,22p' "$0"
	;;
*)
	usage_error "unknown command \"$cmd\""
	;;
esac
