#!/usr/bin/env bash
# Installs what building and booting the Cove guest image needs on a Debian/Ubuntu host.
# Idempotent: does nothing (not even apt-get update) when everything is already installed.
set -euo pipefail

packages=(
  qemu-system-x86   # qemu-system-x86_64 (microvm)
  qemu-utils        # qemu-img (qcow2 overlays)
  qemu-system-common # virtiofsd (QEMU <= 7.2 ships it at /usr/lib/qemu/virtiofsd)
  debootstrap       # the root file system
  debian-archive-keyring
  busybox-static    # the initramfs
  cpio
  xz-utils          # module and kernel decompression
  zstd              # trixie kernels are zstd-compressed
  e2fsprogs         # mkfs.ext4 -d
  dpkg              # dpkg-deb -x of the kernel package
  apt
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup-image-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "setup-image-deps: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
