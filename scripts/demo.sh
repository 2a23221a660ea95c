#!/usr/bin/env bash
# The main job, end to end: set up, boot a sandbox on examples/hello, and run a container in it
# through the host docker CLI and the `cove-hello` context. Needs no registry: the base image is
# made from the host's busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir="$PWD/examples/hello"
node bin/cove up "$dir" --name hello
tar=".cove-demo/busybox.tar"
mkdir -p .cove-demo
node -e "require('./out/test/helpers/busybox-image').makeBusyboxImage(process.argv[1], 'cove-demo/busybox:latest')" "$tar"
docker --context cove-hello load -i "$tar"
echo "--- a container reading the shared folder at the same path:"
docker --context cove-hello run --rm -v "$dir:$dir" cove-demo/busybox cat "$dir/hello.txt"
echo "--- docker build of examples/hello inside the sandbox, then run:"
docker --context cove-hello build -q -t cove-demo/hello "$dir"
docker --context cove-hello run --rm cove-demo/hello
echo
echo "The sandbox keeps running. Try: docker --context cove-hello ps | npx cove ls | npx cove shell hello"
echo "Stop it with: npx cove stop hello    Remove it with: npx cove rm hello"
