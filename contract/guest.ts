// The guest as the host sees it: paths and names inside the VM, its network, and the environment
// variables the agent honours. The agent, coved, the CLI and the extension import these; the guest's
// shell and JavaScript under tier-docker/rootfs repeat a few of them (they run without this module),
// and say so where they do.

/** Paths inside the guest. */
export const GUEST = {
  /** The Docker socket dockerd listens on. */
  dockerSock: '/var/run/docker.sock',
  /** The agent's unix socket (the same SSH service as on the agent channel). */
  agentSock: '/run/cove/agent.sock',
  /** The config the init copied off the config disk. */
  config: '/run/cove/config.json',
  /** Written by the agent when dockerd answers /_ping. */
  readyMarker: '/run/cove/ready',
  /** The virtio-serial port name of the agent channel. */
  agentPortName: 'cove.agent',
  /** The virtio-serial port name of the data channel (HTTP/2 streams to dockerd and guest ports). */
  dataPortName: 'cove.data',
  /**
   * The virtio-serial port a `cove exec` command may read its stdin from directly (PROTOCOL.md,
   * "The stdin port"): host → guest bytes with no process in the guest copying them.
   */
  stdinPortName: 'cove.stdin',
  /** The mount tag of the workspace share (virtio-fs and 9p alike). */
  workspaceTag: 'cove-ws',
  /**
   * Every VM has this many 9p devices for extra mounts (`cove up --mount`), tags `cove-m0`…: a
   * fixed number, so that a VM restored from a template or from sleep has the devices it was saved
   * with, whatever the sandbox shares. Unused ones export an empty folder.
   */
  extraMountSlots: 8,
  extraMountTagPrefix: 'cove-m',
  /** Where the guest mounts a file mount's share for a moment, to bind-mount the one file. */
  filesAside: '/run/cove/files',
  /** The guest script that shuts the sandbox down cleanly. */
  poweroff: '/usr/sbin/cove-poweroff',
} as const;

/**
 * The guest's network, as passt serves it: the guest's address, the gateway, and the DNS address
 * whose queries passt forwards to the host's resolver. tier-docker/rootfs/usr/lib/cove/config-env.js
 * and bare-init repeat these as fallbacks, because they run inside the guest without this module.
 */
export const GUEST_NETWORK = {
  address: '10.0.2.15',
  prefixLength: 24,
  gateway: '10.0.2.2',
  dns: '10.0.2.3',
} as const;

/**
 * The forwarding NIC (docs/data-path.md, "Forwarded ports over the forwarding NIC"): a second
 * virtio-net on qemu's own slirp with `restrict=on`, so the guest can send nothing through it,
 * carrying only connections the host opens to forwarded ports (slirp `hostfwd`). The guest finds
 * it by this MAC address and gives it this address; tier-docker/rootfs/usr/lib/cove/init-lib.sh
 * repeats both, since the guest cannot import this module.
 */
export const GUEST_FORWARD_NIC = {
  mac: '52:54:00:c0:fe:02',
  address: '10.0.3.15',
  prefixLength: 24,
  /** slirp's network and its own address on it (the source of every forwarded connection). */
  net: '10.0.3.0/24',
  host: '10.0.3.2',
  /** Its MTU in the guest (slirp4netns's for libslirp); slirp's SYNs are rewritten to MSS = mtu - 40 (init-lib.sh cove_forward_segments). */
  mtu: 65520,
} as const;

/** The client's working directory request: `env COVE_CWD=/path` on an SSH session, before exec or shell. */
export const CWD_ENV = 'COVE_CWD';
