#!/bin/sh
# Downloads Debian's current bookworm kernel package (the one linux-image-amd64 points to)
# and unpacks it, without installing it, into target/guest-kernel/root/ (boot/vmlinuz-*,
# lib/modules/*): the guest tests boot it under qemu-system-x86_64 with a busybox
# initramfs holding the modules they need (nbd, virtio, nvme-tcp). Idempotent.
set -eu
cd "$(dirname "$0")/.."
dest=target/guest-kernel
if ls "$dest"/root/boot/vmlinuz-* >/dev/null 2>&1; then
    exit 0
fi
package=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1)
[ -n "$package" ] || { echo "fetch-guest-kernel: cannot tell which kernel linux-image-amd64 depends on" >&2; exit 1; }
mkdir -p "$dest"
(cd "$dest" && apt-get download -qq "$package" 2>/dev/null)
rm -rf "$dest/root.tmp"
dpkg-deb -x "$dest/$package"_*.deb "$dest/root.tmp"
# The package has no modules.dep (installing it runs depmod): make it here.
version=$(ls "$dest/root.tmp/lib/modules" | head -n 1)
if command -v depmod >/dev/null; then
    depmod -b "$dest/root.tmp" "$version"
else
    busybox depmod -b "$dest/root.tmp" "$version"
fi
mv "$dest/root.tmp" "$dest/root"
rm -f "$dest/$package"_*.deb
echo "guest kernel $package ready in $dest/root"
