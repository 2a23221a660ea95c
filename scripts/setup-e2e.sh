#!/usr/bin/env bash
# Sets up what the extension's end-to-end tests need: Debian's chromium (driven headless through
# playwright-core), ripgrep and libkrb5-dev (code-server's native modules), and code-server itself,
# installed from npm into .tools/ the way docs of this machine describe (a plain `npm install -g`
# fails as root and on ripgrep's download). Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

CODE_SERVER_VERSION="${COVE_CODE_SERVER_VERSION:-4.100.3}"
TOOLS="$PWD/.tools"
DEST="$TOOLS/code-server-$CODE_SERVER_VERSION"

APT_PACKAGES=(chromium chromium-driver libkrb5-dev ripgrep build-essential python3)
want=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || want+=("$p")
done
if [ "${#want[@]}" -gt 0 ]; then
  echo "setup-e2e: installing Debian packages: ${want[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${want[@]}"
fi

if [ -f "$DEST/.cove-installed" ]; then
  echo "setup-e2e: code-server $CODE_SERVER_VERSION is installed in $DEST"
  exit 0
fi

echo "setup-e2e: installing code-server $CODE_SERVER_VERSION into $DEST (about a minute with a warm npm cache)"
rm -rf "$DEST" "$DEST.tmp"
mkdir -p "$DEST.tmp"
(
  cd "$DEST.tmp"
  tarball="$(npm pack --silent "code-server@$CODE_SERVER_VERSION")"
  tar -xzf "$tarball" --strip-components=1
  rm -f "$tarball"
  export npm_config_yes=true npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
  npm install --omit=dev --ignore-scripts --no-package-lock --loglevel=error
  (cd lib/vscode && npm install --omit=dev --ignore-scripts --no-package-lock --loglevel=error)
  # @vscode/ripgrep downloads its binary in a postinstall that cannot reach GitHub: use Debian's.
  for rgdir in $(find lib/vscode/node_modules -type d -path '*@vscode/ripgrep' -prune); do
    mkdir -p "$rgdir/bin" && ln -sf /usr/bin/rg "$rgdir/bin/rg"
  done
  # The native modules (node-pty, @parcel/watcher, kerberos, spdlog…) are built for this Node.
  (cd lib/vscode && npm rebuild --loglevel=error)
  # code-server's own native module: its CLI (--install-extension included) loads it.
  npm rebuild argon2 --loglevel=error
  # What code-server's postinstall does besides: the asar link and the built-in extensions' deps.
  [ -e lib/vscode/node_modules.asar ] || ln -s node_modules lib/vscode/node_modules.asar
  if [ -f lib/vscode/extensions/package.json ]; then
    (cd lib/vscode/extensions && npm install --omit=dev --ignore-scripts --no-package-lock --loglevel=error)
  fi
)
mv "$DEST.tmp" "$DEST"
touch "$DEST/.cove-installed"
echo "setup-e2e: code-server $CODE_SERVER_VERSION ready: $DEST/lib/vscode/out/server-main.js"
