#!/usr/bin/env bash
# Sets up a fresh Debian machine for Cove: the Debian packages the image build, the VMs and the
# tests need, the npm packages, and a build of the project. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils passt  # the VMs (microvm, qemu-img, the C virtiofsd) and their network
  debootstrap busybox-static cpio xz-utils zstd e2fsprogs   # the image build
  socat iproute2 curl openssh-client ca-certificates        # tests: ss, curl, OpenSSH
)
want=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || want+=("$p")
done
if [ "${#want[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${want[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${want[@]}"
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "setup: the docker CLI is not installed; installing Debian's docker-cli (client only)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends docker-cli || \
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends docker.io
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund
fi
echo "setup: building"
npm run --silent build
