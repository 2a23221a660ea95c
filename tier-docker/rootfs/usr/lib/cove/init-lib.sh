# The parts of /sbin/cove-init that must not fail whatever the config says, as functions: reading
# the config and mounting a share. cove-init sources this file (bash, `set -u`) and defines say();
# test/unit/agent-init.test.ts runs the same functions on a development host, with COVE_RUN_DIR and
# COVE_CONFIG_ENV_JS pointing into a temporary folder and a stub `mount` first on PATH.

# The settings used when the config cannot be (the fallbacks of config-env.js and, for the
# network, contract/guest.ts GUEST_NETWORK, which the guest cannot import).
cove_config_defaults() {
  COVE_HOSTNAME=cove
  COVE_ADDRESS=10.0.2.15/24
  COVE_GATEWAY=10.0.2.2
  COVE_DNS=10.0.2.3
  # The forwarding NIC, found by its MAC (contract/guest.ts GUEST_FORWARD_NIC; not in the config:
  # it is the same for every sandbox, and a template's clones keep what the template's boot set).
  COVE_FORWARD_MAC=52:54:00:c0:fe:02
  COVE_FORWARD_ADDRESS=10.0.3.15/24
  COVE_FORWARD_MTU=65520
  COVE_RESIZE_ROOT=yes
  COVE_ASLR=
  COVE_MOUNT_TAGS=()
  COVE_MOUNT_TYPES=()
  COVE_MOUNT_PATHS=()
  COVE_MOUNT_RO=()
  COVE_MOUNT_FILES=()
  COVE_INSECURE_REGISTRIES=()
}

# Sets the COVE_* variables from the config JSON "$1" through config-env.js. It never fails and
# never leaves a variable unset: when node fails, prints an error, or prints something that is
# not plain assignments, it keeps the defaults, prints `cove: config unreadable: <reason>; using
# defaults` and writes the reason to <run dir>/config-failed, which the agent reports in its
# hello and ready events (a sandbox booted without its own config is degraded, not healthy).
cove_config_load() {
  local file="$1" run="${COVE_RUN_DIR:-/run/cove}" js="${COVE_CONFIG_ENV_JS:-/usr/lib/cove/config-env.js}"
  local out="" rc=0 reason=""
  cove_config_defaults
  out="$(node "$js" "$file" 2> "$run/config-env.err")" || rc=$?
  if [ "$rc" -ne 0 ]; then
    reason="$(head -c 400 "$run/config-env.err" | tr '\n\t' '  ' | sed 's/ *$//')"
    reason="${reason:-config-env.js exited $rc}"
  elif ! bash -n <<< "$out" 2> /dev/null; then
    reason="config-env.js printed something that is not shell"
  elif ! (set -u; eval "$out") > /dev/null 2>&1; then
    # Tried in a subshell first: an error inside eval under `set -u` would end this script.
    reason="config-env.js printed shell that fails"
  fi
  rm -f "$run/config-env.err"
  if [ -n "$reason" ]; then
    echo "$reason" > "$run/config-failed"
    say "config unreadable: $reason; using defaults"
    return 0
  fi
  eval "$out"
  rm -f "$run/config-failed"
}

# Mounts the share with tag "$1" and type "$2" (virtiofs or 9p) at "$3", "$4" being ro or rw,
# as the agent's rebirth does (agent/mounts.ts): mkdir -p, virtiofs when asked, else (or when that
# fails) 9p. On success it appends the path to <run dir>/mounts; on failure it appends
# `path<TAB>reason` to <run dir>/mount-failed, prints `cove: workspace mount FAILED <path>: <reason>`
# and returns 1. The agent reports mount-failed in its hello and ready events.
cove_mount_share() {
  local tag="$1" type="$2" where="$3" ro="$4" file="${5:-}" run="${COVE_RUN_DIR:-/run/cove}"
  local how="" reason="" err=""
  if [ -n "$file" ]; then
    # A file mount (agent/mounts.ts mountFile): the share aside, the one file bind-mounted at
    # "$where", the aside mount let go (the bind mount alone holds the share).
    local aside="$run/files/$tag"
    if ! err="$(mkdir -p "$aside" "$(dirname "$where")" 2>&1)"; then
      reason="cannot create the mount point: $err"
    elif [ -d "$where" ]; then
      reason="$where is a folder in the guest; a file cannot be mounted there"
    elif ! err="$( { [ -e "$where" ] || : > "$where"; } 2>&1)"; then
      reason="cannot create the mount point: $err"
    elif ! err="$(mount -t 9p -o "$ro,trans=virtio,version=9p2000.L,msize=512000,cache=none" "$tag" "$aside" 2>&1)"; then
      reason="9p: ${err:-mount failed}"
    else
      if err="$(mount --bind "$aside/$file" "$where" 2>&1)"; then how=9p; else reason="bind: ${err:-mount failed}"; fi
      umount "$aside" 2>/dev/null
    fi
  elif ! err="$(mkdir -p "$where" 2>&1)"; then
    reason="cannot create the mount point: $err"
  else
    if [ "$type" = virtiofs ]; then
      if err="$(mount -t virtiofs -o "$ro" "$tag" "$where" 2>&1)"; then how=virtiofs; else reason="virtiofs: ${err:-mount failed}"; fi
    fi
    if [ -z "$how" ]; then
      if err="$(mount -t 9p -o "$ro,trans=virtio,version=9p2000.L,msize=512000,cache=none" "$tag" "$where" 2>&1)"; then
        how=9p
      else
        reason="${reason:+$reason; }9p: ${err:-mount failed}"
      fi
    fi
  fi
  if [ -n "$how" ]; then
    echo "$where" >> "$run/mounts"
    say "workspace mounted $where ($how)"
    return 0
  fi
  reason="tag $tag: $(printf '%s' "$reason" | tr '\n\t' '  ')"
  printf '%s\t%s\n' "$where" "$reason" >> "$run/mount-failed"
  say "workspace mount FAILED $where: $reason"
  return 1
}

# Brings up the forwarding NIC (the interface whose MAC is $COVE_FORWARD_MAC, when the VM has one)
# with $COVE_FORWARD_ADDRESS and no route beyond its own network, and writes the address to
# <run dir>/forward-address, which the agent reports in its hello: coved sends forwarded ports
# through that NIC only then. Returns 1 (and says why) when there is a NIC it could not set up.
cove_forward_nic() {
  local run="${COVE_RUN_DIR:-/run/cove}" sys="${COVE_SYS_NET:-/sys/class/net}" d nic="" err=""
  rm -f "$run/forward-address"
  for d in "$sys"/*; do
    [ "$(cat "$d/address" 2>/dev/null)" = "$COVE_FORWARD_MAC" ] && nic="${d##*/}"
  done
  [ -n "$nic" ] || return 0
  if err="$(ip link set "$nic" up 2>&1 && ip addr add "$COVE_FORWARD_ADDRESS" dev "$nic" 2>&1)"; then
    echo "${COVE_FORWARD_ADDRESS%/*}" > "$run/forward-address"
    say "forwarding NIC $nic: ${COVE_FORWARD_ADDRESS}"
    cove_forward_segments "$nic" || true
  else
    say "forwarding NIC $nic: cannot set it up (${err:-ip failed}); forwarded ports use the data channel"
    return 1
  fi
}

# Large segments on the forwarding NIC (docs/data-path.md, "Large segments on the forwarding NIC").
# qemu's slirp offers no offloads and an MSS of 1460, so a guest sending a published port's bytes
# to the host would cut them into 1,448-byte segments and checksum each in emulated code. Three
# settings, each on its own (any subset still forwards, only slower), none of which lets the guest
# reach anything (the netdev has restrict=on):
#  - the NIC's MTU is $COVE_FORWARD_MTU, the MTU slirp4netns gives libslirp;
#  - slirp's SYN (its only option is MSS=1460, at offset 40 of an IPv4 header without options) is
#    rewritten on arrival to MSS = MTU - 40, so the guest's TCP sends segments of up to ~64 KiB,
#    which slirp takes whole; only that exact SYN shape is touched, never a data segment;
#  - connections arriving on the NIC are not tracked, so Docker's DNAT does not take them past
#    docker-proxy to the container (whose veth has MTU 1500 and would cut them again): they reach
#    docker-proxy's 0.0.0.0 listener, as a connection on the guest's loopback does.
# Runs once per boot, from cove_forward_nic after the address is added (a second run never gets
# here: the address exists). Returns 1, and says which settings failed and why, when any did.
cove_forward_segments() {
  local nic="$1" mtu="${COVE_FORWARD_MTU}" err failed=""
  if ! err="$(ip link set "$nic" mtu "$mtu" 2>&1)"; then
    failed+="; mtu $mtu: ${err:-failed}"
  fi
  if ! err="$( { tc qdisc add dev "$nic" ingress && tc filter add dev "$nic" parent ffff: \
      protocol ip prio 1 u32 match u8 0x45 0xff at 0 match ip protocol 6 0xff \
      match u8 0x60 0xf0 at 32 match u8 0x02 0x02 at 33 match u32 0x020405b4 0xffffffff at 40 \
      action pedit munge offset 40 u32 set "0x0204$(printf '%04x' $((mtu - 40)))" \
      pipe action csum tcp; } 2>&1)"; then
    failed+="; the MSS rewrite: ${err:-failed}"
  fi
  if ! err="$(iptables -t raw -I PREROUTING -i "$nic" -p tcp -j CT --notrack 2>&1)"; then
    failed+="; the conntrack exemption: ${err:-failed}"
  fi
  if [ -n "$failed" ]; then
    failed="$(printf '%s' "${failed#; }" | tr '\n\t' '  ')"
    say "forwarding NIC $nic: not all large-segment settings took ($failed); forwarded ports are slower"
    return 1
  fi
  say "forwarding NIC $nic: MTU $mtu, MSS $((mtu - 40)), untracked"
}
