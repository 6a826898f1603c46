#!/usr/bin/env bash
# fetch.sh fetches the signed boot loaders of phoenix's Secure Boot chain:
# Debian's shim (signed by Microsoft's UEFI CA) and Debian's network GRUB
# (signed by Debian, trusted by that shim).
#
# Usage: assets/secureboot/fetch.sh [OUT]      (default build/secureboot)
#
# Writes OUT/shimx64.efi and OUT/grubx64.efi, for phoenix serve's
# --shim-file and --grub-file. The packages (shim-signed,
# grub-efi-amd64-signed) are downloaded with `apt-get download` and
# unpacked with `dpkg -x`, never installed: their maintainer scripts would
# run grub-install on this machine's own disk. A boot server that installs
# them the usual way needs no OUT: serve's defaults are their paths.
# Re-running with the same package versions does nothing.
set -euo pipefail

out=${1:-build/secureboot}

die() {
	echo "fetch.sh: $*" >&2
	exit 1
}

log() {
	echo "fetch.sh: $*" >&2
}

for tool in apt-get apt-cache dpkg; do
	command -v "$tool" >/dev/null || die "$tool missing (Debian package: $tool)"
done

# name in OUT, package, path inside the package
files=(
	"shimx64.efi shim-signed usr/lib/shim/shimx64.efi.signed"
	"grubx64.efi grub-efi-amd64-signed usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
)

version() {
	apt-cache show --no-all-versions "$1" 2>/dev/null | awk '$1 == "Version:" { print $2; exit }'
}

stamp=""
for f in "${files[@]}"; do
	read -r _ pkg _ <<<"$f"
	ver=$(version "$pkg")
	if [[ -z $ver ]]; then
		log "no package lists for $pkg; running apt-get update"
		apt-get update -qq || die "apt-get update failed"
		ver=$(version "$pkg")
		[[ -n $ver ]] || die "no version of $pkg in the package lists"
	fi
	stamp+="${pkg}=${ver} "
done
stamp=${stamp% }

if [[ -f $out/.stamp && $(<"$out/.stamp") == "$stamp" && -s $out/shimx64.efi && -s $out/grubx64.efi ]]; then
	log "$out is up to date ($stamp)"
	exit 0
fi

mkdir -p "$out"
work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
for f in "${files[@]}"; do
	read -r name pkg path <<<"$f"
	ver=$(version "$pkg")
	log "downloading $pkg $ver"
	# APT::Sandbox::User=root: the _apt user may not be able to write here.
	(cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver") ||
		die "apt-get download $pkg=$ver failed"
	dpkg -x "$work"/"$pkg"_*.deb "$work/root"
	[[ -s $work/root/$path ]] || die "$pkg has no $path"
	cp "$work/root/$path" "$out/$name.tmp"
	mv "$out/$name.tmp" "$out/$name"
done
echo "$stamp" >"$out/.stamp"
log "wrote $out/shimx64.efi and $out/grubx64.efi ($stamp)"
