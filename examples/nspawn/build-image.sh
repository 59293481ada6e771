#!/usr/bin/env bash
# Builds a minimal container image directory for the nspawn example and the
# end-to-end tests: Debian's statically linked busybox with its applets as
# symlinks, plus the few files systemd-nspawn insists on. No network needed.
#
# Usage: examples/nspawn/build-image.sh [DEST]   (default: examples/nspawn/image)
# Needs: busybox-static (Debian package), which provides /bin/busybox.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/image}"
busybox="${BUSYBOX:-/bin/busybox}"

if [[ ! -x "$busybox" ]]; then
	echo "build-image.sh: $busybox not found; install the Debian package busybox-static" >&2
	exit 2
fi
# A dynamically linked busybox would need the host's libc inside the image.
if ! "$busybox" --list >/dev/null 2>&1 || { command -v file >/dev/null && file -L "$busybox" | grep -q dynamic; }; then
	echo "build-image.sh: $busybox is not a static busybox; install busybox-static" >&2
	exit 2
fi

tmp="$dest.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,var/tmp,root,data,alloc,local,secrets}
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
cp "$busybox" "$tmp/bin/busybox"
chmod 0755 "$tmp/bin/busybox"
for applet in $("$tmp/bin/busybox" --list); do
	[[ "$applet" == busybox ]] && continue
	[[ -e "$tmp/bin/$applet" ]] || ln -s busybox "$tmp/bin/$applet"
done
# systemd-nspawn refuses a tree without /usr and an os-release file.
cat >"$tmp/etc/os-release" <<'OS'
NAME="nomad-nspawn-busybox"
ID=busybox
PRETTY_NAME="busybox example image for the nspawn driver"
OS
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
: >"$tmp/etc/resolv.conf"
printf 'busybox\n' >"$tmp/etc/hostname"

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "built $dest ($("$dest/bin/busybox" | head -1))"
