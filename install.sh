#!/bin/sh
# install.sh: install the lanyard binary from a GitHub release, checked by SHA-256.
#
# It is an asset of every release, listed in that release's SHA256SUMS:
#   u=https://github.com/lanyard-ci/lanyard/releases/download/v0.1.0
#   curl -fsSLO "$u/install.sh" && curl -fsSLO "$u/SHA256SUMS" &&
#     grep ' install.sh$' SHA256SUMS | sha256sum -c - && sh install.sh --base-url "$u"
#   sh install.sh --from-source        # build with cargo instead (any OS)
#
# POSIX sh (runs under dash, busybox sh, bash). Release assets follow
# docs/lifecycle-contract.md: lanyard-<target>.tar.gz holding `lanyard` at its
# root, and SHA256SUMS beside it in sha256sum format. Nothing is installed
# unless the archive's SHA-256 matches its SHA256SUMS line.
#
# Exit codes: 0 installed; 1 failure (download, checksum, archive, platform,
# install); 2 usage (unknown option, missing or invalid value, refused URL).
#
# Test hooks (for tests/install/run.sh; do not use them otherwise):
#   LANYARD_TEST_UNAME_S, LANYARD_TEST_UNAME_M  replace `uname -s` / `uname -m`.
# They only choose which archive is fetched; the checksum is checked as always.
# A note on stderr says when one is in effect.

set -u

REPO_URL=https://github.com/lanyard-ci/lanyard
PROG=lanyard-install

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage_error() { say "error: $*"; say "run with --help for usage"; exit 2; }

usage() {
	cat <<'EOF'
Install lanyard, the per-job credential sidecar for CI.

Usage: install.sh [--version V] [--base-url URL] [--dir DIR]
       install.sh --from-source [--version V] [--dir DIR]

Options (each also read from the environment variable shown; options win):
  --version V     release to install: "latest" (default) or a version such as
                  0.1.0 or v0.1.0                            [LANYARD_VERSION]
  --base-url URL  the folder holding the release assets (lanyard-<target>.tar.gz
                  and SHA256SUMS). Default:
                    latest: https://github.com/lanyard-ci/lanyard/releases/latest/download
                    V:      https://github.com/lanyard-ci/lanyard/releases/download/vV
                  Must be https:// (plain http:// only for 127.0.0.1, localhost
                  and [::1]).                                [LANYARD_BASE_URL]
  --dir DIR       where to put `lanyard`. Default: /usr/local/bin as root, else
                  $HOME/.local/bin                           [LANYARD_INSTALL_DIR]
  --from-source   build with Rust's cargo instead of downloading a binary (any
                  OS cargo supports). From a lanyard checkout (install.sh run by
                  path, next to agent/) it runs
                    cargo install --locked --path <checkout>/agent
                  otherwise
                    cargo install --locked --git https://github.com/lanyard-ci/lanyard [--tag vV] lanyard
                  with --root in a temporary folder; the binary is then
                  installed into DIR like a downloaded one.
  -h, --help      show this help

Binaries exist for Linux on x86_64 (amd64) and aarch64 (arm64); they are
static (musl). The archive is downloaded with curl (or wget), its SHA-256
(sha256sum, shasum or openssl) must match its line in SHA256SUMS, and
`lanyard` is installed with mode 0755 by an atomic rename.

Exit codes: 0 installed, 1 failure, 2 usage error.
EOF
}

# ---------------------------------------------------------------- cleanup

TMP_DIR=
TMP_DEST=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ -n "$TMP_DEST" ]; then rm -f "$TMP_DEST"; fi
	if [ -n "$TMP_DIR" ]; then rm -rf "$TMP_DIR"; fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

make_tmp_dir() {
	TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/lanyard-install.XXXXXX") ||
		die "could not create a temporary folder (mktemp -d in ${TMPDIR:-/tmp})"
}

# ---------------------------------------------------------------- options

version=${LANYARD_VERSION:-latest}
base_url=${LANYARD_BASE_URL:-}
install_dir=${LANYARD_INSTALL_DIR:-}
from_source=0

need_value() {
	# $1 option, $2 number of remaining arguments
	[ "$2" -ge 2 ] || usage_error "$1 needs a value"
}

while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--version)
		need_value "$1" $#
		version=$2
		shift 2
		;;
	--version=*)
		version=${1#--version=}
		shift
		;;
	--base-url)
		need_value "$1" $#
		base_url=$2
		shift 2
		;;
	--base-url=*)
		base_url=${1#--base-url=}
		shift
		;;
	--dir)
		need_value "$1" $#
		install_dir=$2
		shift 2
		;;
	--dir=*)
		install_dir=${1#--dir=}
		shift
		;;
	--from-source)
		from_source=1
		shift
		;;
	-*)
		usage_error "unknown option: $1"
		;;
	*)
		usage_error "unexpected argument: $1 (install.sh takes options only)"
		;;
	esac
done

# --version: "latest", or a version with or without its leading "v".
tag=
case $version in
'')
	usage_error "--version (or LANYARD_VERSION) is empty; use \"latest\" or a version such as 0.1.0"
	;;
latest) ;;
*[!0-9A-Za-z.+_-]*)
	usage_error "invalid version \"$version\": only letters, digits and . + _ - are allowed"
	;;
v[0-9]*)
	tag=$version
	;;
[0-9]*)
	tag=v$version
	;;
*)
	usage_error "invalid version \"$version\": expected \"latest\" or a version such as 0.1.0"
	;;
esac

# Refuse what cannot be checked: the checksums come from the same place as the
# archive, so a URL an attacker on the path can rewrite makes the check moot.
check_base_url() {
	u=$1
	case $u in
	*' '* | *'	'*)
		usage_error "base URL contains whitespace: \"$u\""
		;;
	*@* | *\?* | *#*)
		usage_error "base URL must be a plain folder URL, without user info, query or fragment: $u"
		;;
	esac
	case $u in
	https://?*)
		return 0
		;;
	http://?*)
		authority=${u#http://}
		authority=${authority%%/*}
		case $authority in
		\[*\]*)
			host=${authority%%\]*}]
			;;
		*)
			host=${authority%%:*}
			;;
		esac
		port=${authority#"$host"}
		case $port in
		'' | :) ;;
		:*[!0-9]*)
			usage_error "base URL has an invalid port: $u"
			;;
		:*) ;;
		*)
			usage_error "base URL has an invalid host: $u"
			;;
		esac
		host=$(printf '%s' "$host" | tr '[:upper:]' '[:lower:]')
		case $host in
		127.0.0.1 | localhost | '[::1]')
			return 0
			;;
		esac
		usage_error "refusing plain http base URL $u: anyone on the network path could replace both the archive and SHA256SUMS, so the checksum would prove nothing. Use https:// (plain http is accepted only for 127.0.0.1, localhost and [::1], for tests)."
		;;
	*)
		usage_error "base URL must start with https:// (got \"$u\")"
		;;
	esac
}

if [ -n "$base_url" ]; then
	# the folder itself; tolerate trailing slashes
	while :; do
		case $base_url in
		*/) base_url=${base_url%/} ;;
		*) break ;;
		esac
	done
	check_base_url "$base_url"
fi

if [ -z "$install_dir" ]; then
	if [ "$(id -u 2>/dev/null)" = 0 ]; then
		install_dir=/usr/local/bin
	elif [ -n "${HOME:-}" ]; then
		install_dir=$HOME/.local/bin
	else
		usage_error "HOME is not set; choose where to install with --dir DIR"
	fi
fi
case $install_dir in
-*) install_dir=./$install_dir ;;
esac

# ---------------------------------------------------------------- helpers

have() { command -v "$1" >/dev/null 2>&1; }

# download URL DEST
download() {
	if have curl; then
		curl --fail --silent --show-error --location \
			--proto '=https,http' --proto-redir '=https' \
			--retry 3 --connect-timeout 20 \
			--output "$2" "$1"
	elif have wget; then
		wget -q -T 20 -O "$2" "$1"
	else
		die "neither curl nor wget is installed; install one of them and run this again"
	fi
}

# sha256 tool: picked before downloading, so a missing tool fails fast.
SHA_TOOL=
pick_sha_tool() {
	if have sha256sum; then
		SHA_TOOL=sha256sum
	elif have shasum; then
		SHA_TOOL=shasum
	elif have openssl; then
		SHA_TOOL=openssl
	else
		die "no SHA-256 tool found (tried sha256sum, shasum, openssl); refusing to install a binary whose checksum cannot be checked. Install coreutils (sha256sum) or openssl and run this again."
	fi
}

# sha256_of FILE: prints the lowercase hex digest. Reads stdin so that no
# file name can change the tool's output format.
sha256_of() {
	case $SHA_TOOL in
	sha256sum) out=$(sha256sum <"$1") || return 1 ;;
	shasum) out=$(shasum -a 256 <"$1") || return 1 ;;
	openssl)
		out=$(openssl dgst -sha256 <"$1") || return 1
		out=${out##*= }
		;;
	*) return 1 ;;
	esac
	out=${out%%[ 	]*}
	printf '%s' "$out" | tr '[:upper:]' '[:lower:]'
}

is_sha256_hex() {
	case $1 in
	*[!0-9a-f]* | '') return 1 ;;
	esac
	[ ${#1} -eq 64 ]
}

# install_file SRC: copies SRC to $install_dir/lanyard with mode 0755 through
# a temporary name in the same folder, then renames it into place.
install_file() {
	dest=$install_dir/lanyard
	mkdir -p "$install_dir" ||
		die "could not create $install_dir (choose another folder with --dir, or run as root)"
	if [ -d "$dest" ]; then
		die "$dest is a folder; remove it or choose another folder with --dir"
	fi
	TMP_DEST=$(mktemp "$install_dir/.lanyard.XXXXXX") ||
		die "could not write to $install_dir (choose another folder with --dir, or run as root)"
	cp "$1" "$TMP_DEST" || die "could not copy lanyard to $TMP_DEST"
	chmod 0755 "$TMP_DEST" || die "could not make $TMP_DEST executable"
	mv -f "$TMP_DEST" "$dest" || die "could not move lanyard into place at $dest"
	TMP_DEST=
	printf 'installed: %s\n' "$dest"
	if v=$("$dest" --version 2>&1); then
		printf '%s\n' "$v"
	else
		say "note: $dest is installed but \`lanyard --version\` did not run: $v"
	fi
	case ":${PATH:-}:" in
	*":$install_dir:"*) ;;
	*) say "note: $install_dir is not on PATH; add it with: export PATH=\"$install_dir:\$PATH\"" ;;
	esac
}

# ---------------------------------------------------------------- from source

install_from_source() {
	[ -z "$base_url" ] || say "note: --base-url is not used with --from-source"
	have cargo ||
		die "--from-source needs Rust's cargo; install it from https://rustup.rs and run this again"
	checkout=
	case $0 in
	install.sh | */install.sh)
		d=.
		case $0 in */*) d=${0%/*} ;; esac
		if [ -f "$0" ] && [ -f "$d/Cargo.toml" ] && [ -f "$d/agent/Cargo.toml" ] &&
			grep -q '^name = "lanyard"' "$d/agent/Cargo.toml"; then
			checkout=$d
		fi
		;;
	esac
	make_tmp_dir
	root=$TMP_DIR/cargo-root
	if [ -n "$checkout" ]; then
		[ -z "$tag" ] || say "note: building the checkout at $checkout as it is; --version $version is not used"
		say "building from the checkout: cargo install --locked --path $checkout/agent"
		cargo install --locked --path "$checkout/agent" --root "$root" ||
			die "cargo install --path $checkout/agent failed (see its output above)"
	else
		if [ -n "$tag" ]; then
			say "building $tag: cargo install --locked --git $REPO_URL --tag $tag lanyard"
			cargo install --locked --git "$REPO_URL" --tag "$tag" --root "$root" lanyard ||
				die "cargo install --git $REPO_URL --tag $tag failed (see its output above)"
		else
			say "building the default branch: cargo install --locked --git $REPO_URL lanyard"
			cargo install --locked --git "$REPO_URL" --root "$root" lanyard ||
				die "cargo install --git $REPO_URL failed (see its output above)"
		fi
	fi
	[ -f "$root/bin/lanyard" ] || die "cargo finished but left no $root/bin/lanyard"
	install_file "$root/bin/lanyard"
}

# ---------------------------------------------------------------- binary

detect_target() {
	if [ -n "${LANYARD_TEST_UNAME_S:-}" ]; then
		os=$LANYARD_TEST_UNAME_S
		say "note: test hook LANYARD_TEST_UNAME_S=$os replaces uname -s"
	else
		os=$(uname -s 2>/dev/null) || os=
	fi
	if [ -n "${LANYARD_TEST_UNAME_M:-}" ]; then
		arch=$LANYARD_TEST_UNAME_M
		say "note: test hook LANYARD_TEST_UNAME_M=$arch replaces uname -m"
	else
		arch=$(uname -m 2>/dev/null) || arch=
	fi
	case $os in
	Linux) ;;
	*)
		die "no prebuilt lanyard binary for ${os:-this OS} (binaries are released for Linux only); build from source instead: sh install.sh --from-source (needs Rust's cargo)"
		;;
	esac
	case $arch in
	x86_64 | amd64) target=x86_64-unknown-linux-musl ;;
	aarch64 | arm64) target=aarch64-unknown-linux-musl ;;
	*)
		die "unsupported architecture \"${arch}\": binaries are released for x86_64 (amd64) and aarch64 (arm64) only; try --from-source"
		;;
	esac
}

install_binary() {
	detect_target
	pick_sha_tool
	have tar || die "tar is not installed; it is needed to unpack the release archive"
	if [ -z "$base_url" ]; then
		if [ -n "$tag" ]; then
			base_url=$REPO_URL/releases/download/$tag
		else
			base_url=$REPO_URL/releases/latest/download
		fi
	elif [ -n "$tag" ]; then
		say "note: --base-url given; it is used as the release folder as is (--version $version does not change it)"
	fi
	archive=lanyard-$target.tar.gz
	make_tmp_dir

	say "downloading $base_url/SHA256SUMS"
	download "$base_url/SHA256SUMS" "$TMP_DIR/SHA256SUMS" ||
		die "could not download $base_url/SHA256SUMS; refusing to install without a checksum"
	# One digest for the archive's name (sha256sum's "*name" binary marker and
	# CRLF line ends tolerated); two different ones are refused.
	expected=$(awk -v n="$archive" '
		{ sub(/\r$/, "") }
		$2 == n || $2 == ("*" n) {
			d = tolower($1)
			if (found && d != first) conflict = 1
			if (!found) first = d
			found = 1
		}
		END { if (conflict) print "conflict"; else if (found) print first }
	' "$TMP_DIR/SHA256SUMS") || die "could not read SHA256SUMS"
	case $expected in
	'') die "SHA256SUMS at $base_url has no line for $archive; refusing to install an archive that cannot be checked" ;;
	conflict) die "SHA256SUMS at $base_url has conflicting lines for $archive; refusing to install" ;;
	esac
	is_sha256_hex "$expected" ||
		die "SHA256SUMS at $base_url has a malformed digest for $archive (\"$expected\"); refusing to install"

	say "downloading $base_url/$archive"
	download "$base_url/$archive" "$TMP_DIR/$archive" ||
		die "could not download $base_url/$archive"

	actual=$(sha256_of "$TMP_DIR/$archive") || actual=
	is_sha256_hex "$actual" ||
		die "could not compute the SHA-256 of $archive with $SHA_TOOL; refusing to install"
	if [ "$actual" != "$expected" ]; then
		die "checksum mismatch for $archive: expected sha256 $expected (from SHA256SUMS), actual sha256 $actual; refusing to install (the download is corrupt or was tampered with)"
	fi
	say "sha256 $actual matches SHA256SUMS"

	# Only now look inside. Refuse absolute and ".." members outright, even
	# though only `lanyard` is extracted.
	members=$(tar -tzf "$TMP_DIR/$archive" 2>"$TMP_DIR/tar.err") ||
		die "could not list $archive: $(cat "$TMP_DIR/tar.err")"
	bad=$(printf '%s\n' "$members" | awk '
		/^\// || $0 == ".." || /^\.\.\// || /\/\.\.\// || /\/\.\.$/ { print; exit }
	')
	[ -z "$bad" ] ||
		die "$archive has an unsafe member \"$bad\" (absolute path or ..); refusing to install"
	count=$(printf '%s\n' "$members" | awk '$0 == "lanyard" || $0 == "./lanyard" { n++; m = $0 } END { print n + 0, m }')
	case $count in
	"1 "*) member=${count#1 } ;;
	"0 "*) die "$archive has no lanyard member at its root; refusing to install" ;;
	*) die "$archive has more than one lanyard member; refusing to install" ;;
	esac
	mkdir "$TMP_DIR/x" || die "could not create $TMP_DIR/x"
	tar -xzf "$TMP_DIR/$archive" -C "$TMP_DIR/x" "$member" 2>"$TMP_DIR/tar.err" ||
		die "could not extract lanyard from $archive: $(cat "$TMP_DIR/tar.err")"
	if [ -h "$TMP_DIR/x/lanyard" ] || [ ! -f "$TMP_DIR/x/lanyard" ]; then
		die "the lanyard member of $archive is not a regular file; refusing to install"
	fi
	install_file "$TMP_DIR/x/lanyard"
}

if [ "$from_source" = 1 ]; then
	install_from_source
else
	install_binary
fi
exit 0
