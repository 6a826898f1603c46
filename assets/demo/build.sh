#!/usr/bin/env bash
# build.sh builds the phoenix demo image: Debian's kernel plus a tiny busybox
# initramfs whose /init reports the booted digest to phoenix and powers off.
#
# Usage: assets/demo/build.sh [OUT] [VERSION_TAG]
#   OUT          output directory (default build/demo)
#   VERSION_TAG  written to /etc/phoenix-demo-version inside the initramfs
#                (default 1), so two tags give two different digests.
#
# Writes OUT/vmlinuz and OUT/initrd.img. The kernel .deb is downloaded with
# `apt-get download` into OUT/work and unpacked with `dpkg -x`: it is never
# installed and /boot is never touched. Re-running with the same inputs does
# nothing; the initramfs is reproducible (sorted entries, fixed mtimes, owner
# root, no gzip timestamp), so the same inputs give the same digest.
set -euo pipefail

out=${1:-build/demo}
tag=${2:-1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# BUSYBOX overrides the static busybox to ship (default: busybox-static's).
busybox=${BUSYBOX:-/bin/busybox}
# SOURCE_DATE_EPOCH is the usual knob for reproducible builds; every file in
# the initramfs gets this mtime.
epoch=${SOURCE_DATE_EPOCH:-0}

# The NIC drivers QEMU needs, in the order LAB-NOTES found to load cleanly,
# and virtio_blk for the disk-mode installer (init).
# Missing dependencies are added ahead of the module that needs them.
root_modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
	virtio_pci failover net_failover virtio_net e1000 virtio_blk)

die() {
	echo "build.sh: $*" >&2
	exit 1
}

log() {
	echo "build.sh: $*" >&2
}

# The tag ends up in an image reference (demo:TAG), so keep it to what an
# OCI-style tag allows.
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
	die "version tag ${tag@Q}: want letters, digits, '_', '.', '-' (max 128)"

[[ -x $busybox ]] || die "$busybox missing: apt-get install busybox-static"
# Debian's dynamic "busybox" package also installs /bin/busybox, but the
# initramfs has no libc, so only the static build works there.
if ldd "$busybox" >/dev/null 2>&1; then
	die "$busybox is dynamically linked: apt-get install busybox-static"
fi
for tool in cpio gzip apt-get apt-cache dpkg find sort; do
	command -v "$tool" >/dev/null || die "$tool missing (Debian package: $tool)"
done

# kernel_package prints the linux-image-6.1.0-*-amd64 package that
# linux-image-amd64 currently depends on, or nothing without package lists.
kernel_package() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

pkg=$(kernel_package)
if [[ -z $pkg ]]; then
	log "no package lists for linux-image-amd64; running apt-get update"
	apt-get update -qq || die "apt-get update failed"
	pkg=$(kernel_package)
	[[ -n $pkg ]] || die "cannot resolve linux-image-amd64's kernel package"
fi
ver=$(apt-cache show --no-all-versions "$pkg" | awk '$1 == "Version:" { print $2; exit }')
[[ -n $ver ]] || die "no version for $pkg"
arch=$(dpkg --print-architecture)
# apt-get download writes epochs as %3a.
deb="$out/work/${pkg}_${ver//:/%3a}_${arch}.deb"

inputs=("$here/build.sh" "$here/init" "$busybox")
stamp="kernel=${pkg}_${ver} tag=$tag epoch=$epoch"

# up_to_date reports whether OUT already holds this exact build.
up_to_date() {
	[[ -f $out/vmlinuz && -f $out/initrd.img && -f $out/.stamp ]] || return 1
	[[ $(<"$out/.stamp") == "$stamp" ]] || return 1
	local f
	for f in "${inputs[@]}"; do
		[[ $out/vmlinuz -nt $f && $out/initrd.img -nt $f ]] || return 1
	done
}

print_import() {
	echo "phoenix image import demo:$tag --kernel $out/vmlinuz --initrd $out/initrd.img --cmdline \"console=ttyS0 quiet\""
}

if up_to_date; then
	log "$out is up to date ($stamp)"
	print_import
	exit 0
fi

mkdir -p "$out/work"
if [[ ! -s $deb ]]; then
	log "downloading $pkg $ver"
	# Download into a temp dir first so a failed download never looks cached.
	# APT::Sandbox::User=root: the _apt user may not be able to write to OUT.
	dl=$(mktemp -d "$out/work/download.XXXXXX")
	if ! (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver"); then
		log "download failed; running apt-get update and retrying"
		apt-get update -qq || die "apt-get update failed"
		(cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver") ||
			die "apt-get download $pkg=$ver failed"
	fi
	mv "$dl"/*.deb "$deb" || die "apt-get download left no .deb in $dl"
	rmdir "$dl"
	# Older kernel debs are dead weight once linux-image-amd64 moved on.
	find "$out/work" -maxdepth 1 -name 'linux-image-*.deb' ! -path "$deb" -delete
fi

kroot="$out/work/kernel"
stage="$out/work/initramfs"
rm -rf "$kroot" "$stage"
log "unpacking $(basename "$deb")"
dpkg -x "$deb" "$kroot"

kdirs=("$kroot"/lib/modules/*/)
[[ ${#kdirs[@]} -eq 1 && -d ${kdirs[0]} ]] || die "want exactly one lib/modules/<version> in $deb"
kdir=${kdirs[0]%/}
kver=$(basename "$kdir")
[[ -f $kroot/boot/vmlinuz-$kver ]] || die "no boot/vmlinuz-$kver in $deb"

# module_file prints the path of module $1 (names may use '-' or '_').
module_file() {
	local pattern=${1//[-_]/[-_]}
	find "$kdir/kernel" -name "$pattern.ko" -o -name "$pattern.ko.xz" \
		-o -name "$pattern.ko.zst" -o -name "$pattern.ko.gz" | sort | head -n 1
}

# module_depends prints the modules that $1 (a .ko file) needs, one a line.
module_depends() {
	local deps
	if command -v modinfo >/dev/null; then
		deps=$(modinfo -F depends "$1")
	else
		# Without kmod read the .modinfo strings directly; compressed
		# modules are decompressed by the caller first.
		deps=$(tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -n 1)
	fi
	tr ',' '\n' <<<"$deps" | sed '/^$/d'
}

# decompress copies module $1 to $2 as a plain .ko: busybox insmod cannot
# read compressed modules.
decompress() {
	case $1 in
	*.ko) cp "$1" "$2" ;;
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.zst) zstd -qdc "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*) die "unknown module format: $1" ;;
	esac
}

mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/share/udhcpc,etc,proc,sys,dev,run,tmp,lib/modules}
declare -A done_modules=()
load_order=()

# add_module stages module $1 after its dependencies (depth-first), so the
# order file lists every module after the ones it needs.
add_module() {
	local name=${1//-/_} f dep
	[[ -z ${done_modules[$name]:-} ]] || return 0
	done_modules[$name]=1
	f=$(module_file "$name")
	if [[ -z $f ]]; then
		# Built into this kernel, or gone: nothing to load.
		grep -q "/${name//_/[-_]}\.ko" "$kdir/modules.builtin" 2>/dev/null ||
			log "warning: module $name not found in $kver"
		return 0
	fi
	decompress "$f" "$stage/lib/modules/$name.ko"
	while read -r dep; do
		add_module "$dep"
	done < <(module_depends "$stage/lib/modules/$name.ko")
	load_order+=("$name")
}

for m in "${root_modules[@]}"; do
	add_module "$m"
done
printf '%s\n' "${load_order[@]}" >"$stage/etc/phoenix-demo-modules"
log "modules ($kver): ${load_order[*]}"

cp "$busybox" "$stage/bin/busybox"
# /init runs `busybox --install -s` first thing: one process in the guest
# instead of ~400 ln forks here. Only the interpreter of the scripts is needed
# up front.
ln -s busybox "$stage/bin/sh"

cp "$here/init" "$stage/init"
echo "$tag" >"$stage/etc/phoenix-demo-version"
echo "phoenix-demo" >"$stage/etc/hostname"

# udhcpc only talks DHCP; this script applies the lease it gets.
cat >"$stage/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc event script of the phoenix demo image: applies the lease.
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" broadcast "${broadcast:-+}" dev "$interface"
	for r in $router; do
		ip route replace default via "$r" dev "$interface"
		break
	done
	: >/etc/resolv.conf
	for d in $dns; do
		echo "nameserver $d" >>/etc/resolv.conf
	done
	;;
esac
exit 0
EOF

# Modes and mtimes come from here, not from the checkout or umask, so the
# archive is the same on every machine.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
chmod 0755 "$stage/init" "$stage/bin/busybox" "$stage/usr/share/udhcpc/default.script"
chmod 1777 "$stage/tmp"
find "$stage" -exec touch -h -d "@$epoch" {} +

tmp_initrd="$out/.initrd.img.tmp"
tmp_kernel="$out/.vmlinuz.tmp"
(cd "$stage" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$tmp_initrd"
cp "$kroot/boot/vmlinuz-$kver" "$tmp_kernel"
mv "$tmp_kernel" "$out/vmlinuz"
mv "$tmp_initrd" "$out/initrd.img"
echo "$stamp" >"$out/.stamp"

# The unpacked kernel is ~400 MB; the .deb stays as the download cache.
if [[ -z ${KEEP_WORK:-} ]]; then
	rm -rf "$kroot"
fi

log "kernel $kver, tag $tag"
log "vmlinuz    sha256:$(sha256sum "$out/vmlinuz" | cut -d' ' -f1)"
log "initrd.img sha256:$(sha256sum "$out/initrd.img" | cut -d' ' -f1)"
print_import
