// coved's API: JSON-RPC 2.0 over WebSocket on $COVE_HOME/coved.sock. This module is the only place
// where the requests, their parameters, results and the notifications are written; coved, the CLI
// and the extension all import it. It does not import `vscode`.
import { NotificationType, RequestType, RequestType0 } from 'vscode-jsonrpc';

export const PROTOCOL_VERSION = 1;

/** Largest JSON-RPC frame coved accepts; bigger frames close the connection (WebSocket 1009). */
export const MAX_FRAME_BYTES = 1024 * 1024;

/**
 * `paused`: the VM is stopped in memory (no CPU); `asleep`: its state is saved to disk and no VM
 * process is left. Both wake on the next connection to the sandbox's Docker or SSH socket or a
 * forwarded port, and on `cove start`.
 */
export type SandboxState = 'creating' | 'starting' | 'running' | 'paused' | 'asleep' | 'stopping' | 'stopped' | 'crashed';
export type MountType = 'virtiofs' | '9p';

/**
 * One more host folder or file shared into the guest besides the workspace (`cove up --mount
 * HOST[:GUEST][:ro]`). A file is shared as itself (a hard link of it in the sandbox's folder), not
 * its whole folder.
 */
export interface ExtraMount {
  /** Absolute host path. */
  host: string;
  /** Absolute guest path: the host path unless one was given. */
  guest: string;
  readonly: boolean;
  kind: 'dir' | 'file';
}
/** What a client asks for; coved resolves and checks it into an `ExtraMount`. */
export interface MountRequest {
  host: string;
  guest?: string;
  readonly?: boolean;
}

/** Where a Docker CLI plugin the host uses comes from: the user's own, Cove's copy, or none. */
export interface CliPluginInfo {
  name: 'compose' | 'buildx';
  source: 'user' | 'cove' | 'missing';
  /** The plugin binary the docker CLI finds, when there is one. */
  path: string | null;
  /** The plugin's version (the image's package version for Cove's copy). */
  version?: string;
  /** Why it is missing or was left alone, when it is. */
  note?: string;
}
export interface PluginsParams {
  /** Only report, install nothing. */
  check?: boolean;
}
export interface PluginsResult {
  plugins: CliPluginInfo[];
  /** The plugins installed by this call (empty when the host had them all). */
  installed: string[];
  /** The folder Cove installs into: `$DOCKER_CONFIG/cli-plugins`, default `~/.docker/cli-plugins`. */
  dir: string;
}
export type Accel = 'kvm' | 'tcg';

export interface PortForward {
  hostPort: number;
  guestPort: number;
  /** `auto` when it follows a listening port the agent reported, `manual` from `cove publish`. */
  origin: 'auto' | 'manual';
  /** Set when the host port could not be bound (in use, privileged). */
  error?: string;
}

export interface SandboxInfo {
  name: string;
  state: SandboxState;
  /** The shared folder: the same absolute path on the host and in the guest. */
  workspace: string;
  mount: MountType;
  /** More shared folders and files (9p), as the sandbox's next start mounts them. */
  mounts: ExtraMount[];
  /** Set while the running VM has other mounts than `mounts` (they change on its next start). */
  mountsNote?: string;
  /**
   * Whether the sandbox's Docker socket refuses containers that bind-mount a host path that is not
   * shared (`cove up --bind-guard=off` turns it off).
   */
  bindGuard: boolean;
  /** `passt` keeps the host's loopback out of the guest's reach; `user` is qemu's slirp, which does not. */
  network: 'passt' | 'user' | null;
  readonly: boolean;
  /** Host 127.0.0.1 ports the guest reaches at its own 127.0.0.1 (e.g. a local registry). */
  allowHostPorts: number[];
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  accel: Accel | null;
  /** The Docker context on the host, `cove-<name>`, or null where the docker CLI is missing. */
  context: string | null;
  /** `unix://…/docker.sock`: what DOCKER_HOST should be to reach this sandbox. */
  dockerHost: string;
  /** The folder that is this sandbox on disk. */
  dir: string;
  image: string;
  ports: PortForward[];
  /** Whether dockerd in the guest answers `/_ping`. */
  dockerReady: boolean;
  /** Seconds from starting qemu to dockerd answering, for the last boot. */
  bootSeconds: number | null;
  /** How the VM last came up: a cold boot, a restore of the image's template, or a wake from sleep. */
  bootKind: 'cold' | 'template' | 'wake' | null;
  /** Never paused or put to sleep when idle (`cove up --keep-awake`). */
  keepAwake: boolean;
  /** Why the last warm start or sleep could not be used (a one-line reason), when it could not. */
  warmNote?: string;
  pids: { qemu: number | null; virtiofsd: number | null; passt: number | null };
  createdAt: string;
  /** The last lines of the console when the sandbox crashed or failed to boot. */
  consoleTail?: string;
  /** Why the sandbox is crashed or failed, with what to do next. */
  problem?: string;
}

export interface UpParams {
  /** The folder to share; absolute. */
  dir: string;
  name?: string;
  cpus?: number;
  memoryMiB?: number;
  diskGiB?: number;
  mount?: MountType;
  readonly?: boolean;
  /**
   * More folders or files to share. Given for an existing sandbox, they replace its list and take
   * effect on its next start.
   */
  mounts?: MountRequest[];
  /** false: containers may bind-mount any path (the guest's own). Default true. */
  bindGuard?: boolean;
  /** Host 127.0.0.1 ports the guest may reach (at guest 127.0.0.1, same port); none by default. */
  allowHostPorts?: number[];
  /** Never pause or sleep this sandbox when it is idle. */
  keepAwake?: boolean;
  /** Echoed in this request's progress events, so a client follows them before it knows the name. */
  progressToken?: string;
}

export interface NameParams {
  name: string;
}
export interface StopParams extends NameParams {
  /** Skip the clean shutdown and kill qemu. */
  force?: boolean;
}
export interface RemoveParams extends NameParams {
  /** Remove a running sandbox (stopping it first). */
  force?: boolean;
}
export interface PublishParams extends NameParams {
  hostPort: number;
  guestPort: number;
}
export interface UnpublishParams extends NameParams {
  hostPort: number;
}

export interface ImageInfo {
  tier: string;
  hash: string;
  dir: string;
  builtAt: string;
  versions: Record<string, string>;
  sizes: Record<string, number>;
}
export interface ImageBuildParams {
  force?: boolean;
  /** Echoed in this build's progress events, as `up` does. */
  progressToken?: string;
}
export interface ImageBuildResult {
  image: ImageInfo;
  cached: boolean;
  seconds: number;
}

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do when it is not ok. */
  hint?: string;
}
export interface DoctorResult {
  checks: DoctorCheck[];
  accel: Accel | null;
  accelDetail: string;
}

export interface VersionResult {
  version: string;
  protocol: number;
  pid: number;
  home: string;
}

/** A step of a long operation, for progress bars and notifications. */
export interface ProgressEvent {
  /** The sandbox name, or `image` for an image build. */
  subject: string;
  operation: 'up' | 'start' | 'stop' | 'sleep' | 'pause' | 'build' | 'template';
  step: string;
  message: string;
  /** 0..1 where known. */
  fraction?: number;
  /** The `progressToken` of the request this progress belongs to, when it gave one. */
  token?: string;
}

export interface SandboxChangedEvent {
  sandbox: SandboxInfo;
}
export interface SandboxRemovedEvent {
  name: string;
}
export interface PortEvent {
  name: string;
  port: PortForward;
  action: 'forwarded' | 'removed' | 'failed';
}

export const Requests = {
  version: new RequestType0<VersionResult, void>('cove/version'),
  doctor: new RequestType0<DoctorResult, void>('cove/doctor'),
  up: new RequestType<UpParams, SandboxInfo, void>('sandbox/up'),
  list: new RequestType0<SandboxInfo[], void>('sandbox/list'),
  inspect: new RequestType<NameParams, SandboxInfo, void>('sandbox/inspect'),
  start: new RequestType<NameParams, SandboxInfo, void>('sandbox/start'),
  stop: new RequestType<StopParams, SandboxInfo, void>('sandbox/stop'),
  /** Saves a running sandbox to disk and ends its VM processes; the next connection wakes it. */
  sleep: new RequestType<NameParams, SandboxInfo, void>('sandbox/sleep'),
  /** Stops a running sandbox's vCPUs (no CPU, memory kept); the next connection resumes it. */
  pause: new RequestType<NameParams, SandboxInfo, void>('sandbox/pause'),
  remove: new RequestType<RemoveParams, void, void>('sandbox/remove'),
  publish: new RequestType<PublishParams, PortForward, void>('sandbox/publish'),
  unpublish: new RequestType<UnpublishParams, void, void>('sandbox/unpublish'),
  imageBuild: new RequestType<ImageBuildParams, ImageBuildResult, void>('image/build'),
  imageList: new RequestType0<ImageInfo[], void>('image/list'),
  /**
   * Installs the image's compose and buildx plugins into the Docker CLI plugin folder where the
   * host's docker CLI has none (never replacing one), or with `check` only reports.
   */
  plugins: new RequestType<PluginsParams, PluginsResult, void>('host/plugins'),
  /** Removes images no sandbox is made over, except the newest; returns the removed folders. */
  imagePrune: new RequestType0<string[], void>('image/prune'),
  shutdown: new RequestType0<void, void>('cove/shutdown'),
} as const;

export const Notifications = {
  progress: new NotificationType<ProgressEvent>('cove/progress'),
  sandboxChanged: new NotificationType<SandboxChangedEvent>('sandbox/changed'),
  sandboxRemoved: new NotificationType<SandboxRemovedEvent>('sandbox/removed'),
  port: new NotificationType<PortEvent>('sandbox/port'),
} as const;

/** JSON-RPC error codes of coved's own errors (the -32000..-32099 server range). */
export const ErrorCodes = {
  /** No sandbox of that name. */
  notFound: -32001,
  /** A name, path, size or port that cannot be used. */
  invalidInput: -32002,
  /** The operation conflicts with the sandbox's state or another sandbox. */
  conflict: -32003,
  /** A tool Cove needs is missing on the host. */
  missingTool: -32004,
  /** The host is out of disk space. */
  noSpace: -32005,
  /** The image build failed. */
  imageBuild: -32006,
  /** The VM did not boot, crashed, or did not reach dockerd in time. */
  boot: -32007,
  /** Anything else. */
  internal: -32010,
} as const;

/** The `data` of every coved error: what to do next. */
export interface ErrorData {
  hint?: string;
  consoleTail?: string;
}
