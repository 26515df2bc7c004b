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
#       copies the repo's install.sh into OUTDIR (it is a release asset too:
#       pipelines fetch it from the release they pin and check it against
#       SHA256SUMS before running it), then writes OUTDIR/SHA256SUMS
#       (sha256sum format) for the given targets' archives, each of which must
#       exist, and install.sh; with no TARGET, for every lanyard-*.tar.gz in
#       OUTDIR.
#   package-release.sh major-tag TAG [EXISTING_TAG...]
#       prints the major tag (v1 for v1.2.3) that the release of TAG moves to
#       its commit, or nothing (with the reason on stderr) when TAG is a
#       prerelease (v1.2.3-rc.1) or an older line than an EXISTING_TAG of the
#       same major (v1.2.4 after v1.3.0). TAG must be vX.Y.Z[-pre].
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
	printf 'usage: %s archive TARGET BINARY OUTDIR\n       %s sums OUTDIR [TARGET...]\n       %s major-tag TAG [EXISTING_TAG...]\n' "$0" "$0" "$0" >&2
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
	[ -f "$repo_root/install.sh" ] || die "$repo_root/install.sh is missing"
	cp "$repo_root/install.sh" install.sh.tmp || die "cannot copy install.sh"
	chmod 0755 install.sh.tmp || die "chmod failed"
	mv -f install.sh.tmp install.sh || die "cannot move install.sh into place"
	files="$files install.sh"
	# the names are lanyard-<target>.tar.gz with checked targets: no spaces
	# shellcheck disable=SC2086
	sha256sum $files >SHA256SUMS.tmp || die "sha256sum failed"
	mv -f SHA256SUMS.tmp SHA256SUMS || die "cannot move SHA256SUMS into place"
	sha256sum -c --quiet SHA256SUMS || die "SHA256SUMS does not check against the archives"
	cat SHA256SUMS
}

# The numbers of vX.Y.Z, space-separated; fails on anything else.
final_version() {
	case $1 in
	v[0-9]*.[0-9]*.[0-9]*) ;;
	*) return 1 ;;
	esac
	rest=${1#v}
	case $rest in
	*[!0-9.]* | *..* | .* | *.) return 1 ;;
	esac
	printf '%s\n' "$rest" | tr . ' '
}

major_tag() {
	tag=$1
	shift
	case $tag in
	v[0-9]*.[0-9]*.[0-9]*-*)
		printf '%s: note: %s is a prerelease; the major tag stays where it is\n' "$PROG" "$tag" >&2
		return 0
		;;
	esac
	nums=$(final_version "$tag") || usage_error "release tag \"$tag\" is not vX.Y.Z or vX.Y.Z-prerelease"
	# shellcheck disable=SC2086 # three numbers, split on purpose
	set -- $nums "$@"
	major=$1 minor=$2 patch=$3
	shift 3
	for other in "$@"; do
		o=$(final_version "$other") || continue # v1, prereleases, other names
		# shellcheck disable=SC2086
		set -- $o
		[ "$1" = "$major" ] || continue
		if [ "$2" -gt "$minor" ] || { [ "$2" -eq "$minor" ] && [ "$3" -gt "$patch" ]; }; then
			printf '%s: note: %s is newer than %s; v%s stays where it is\n' "$PROG" "$other" "$tag" "$major" >&2
			return 0
		fi
	done
	printf 'v%s\n' "$major"
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
major-tag)
	[ $# -ge 1 ] || usage_error "major-tag takes TAG [EXISTING_TAG...]"
	major_tag "$@"
	;;
-h | --help)
	sed -n '2,31p' "$0"
	;;
*)
	usage_error "unknown command \"$cmd\""
	;;
esac
