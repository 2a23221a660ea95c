// The agent's control channel: the SSH subsystem `cove-control`, one request per channel. The
// client writes one JSON line (a ControlRequest), the agent answers one JSON line (the answer of
// that op, or a ControlFailure) and closes the channel with exit status 0 (ok) or 1 (not ok).
// agent/PROTOCOL.md describes the ops; this module is the only place their types are written, and
// it imports nothing, so coved, the CLI and the tests can use it as it is.

/** The SSH subsystem name of the control channel. */
export const CONTROL_SUBSYSTEM = 'cove-control';

/** The agent refuses a request line longer than this many bytes. */
export const CONTROL_MAX_REQUEST_BYTES = 64 * 1024;

/** How many random bytes `entropy` must carry (base64 of exactly this many bytes). */
export const CONTROL_ENTROPY_BYTES = 64;

/**
 * A restored clone of a template becomes its own sandbox: reseed the kernel RNG, step the clock,
 * re-read the config disk, swap the SSH host key and authorized keys, set the hostname and mount
 * the config's mounts, in this order. Answered by RebirthAnswer.
 */
export interface RebirthRequest {
  op: 'rebirth';
  /** The host's wall clock, in ms since the epoch, when the request was written. */
  epochMs: number;
  /** Host random bytes for the guest kernel RNG: base64 of CONTROL_ENTROPY_BYTES bytes. */
  entropy: string;
}

/**
 * Prepare for saving the VM: `sync`, and with `unmount` unmount every mounted share (QEMU 7.2
 * cannot save a VM with a mounted 9p share). Answered by SuspendAnswer, or a ControlFailure whose
 * `busy` lists the mounts that could not be unmounted (then nothing is left unmounted).
 */
export interface SuspendRequest {
  op: 'suspend';
  unmount: boolean;
}

/**
 * After a restore of a suspended sandbox: reseed, step the clock and, with `remount`, mount the
 * config's mounts again. Answered by ResumeAnswer.
 */
export interface ResumeRequest {
  op: 'resume';
  epochMs: number;
  entropy: string;
  remount: boolean;
}

export type ControlRequest = RebirthRequest | SuspendRequest | ResumeRequest;
export type ControlOp = ControlRequest['op'];

/** Milliseconds each step took, measured in the guest. */
export interface StepTimes {
  /** Writing the entropy to the kernel RNG and forcing a reseed (includes starting the helper). */
  reseed: number;
  /** Setting the wall clock. */
  clock: number;
  /** Reading and checking the config (rebirth: off the config disk; resume: /run/cove/config.json). */
  config: number;
  /** Swapping the SSH host key and authorized keys (rebirth only; 0 for resume). */
  keys: number;
  /** Setting the hostname (rebirth only; 0 for resume). */
  hostname: number;
  /** Mounting the config's mounts (0 when there is nothing to mount). */
  mounts: number;
}

export interface RebirthAnswer {
  ok: true;
  ms: StepTimes;
  /** The hostname the guest has now. */
  hostname: string;
  /** Guest paths mounted by this request, in mount order. */
  mounted: string[];
}

export interface ResumeAnswer {
  ok: true;
  ms: StepTimes;
  hostname: string;
  /** Guest paths mounted by this request (none without `remount`, or when they stayed mounted). */
  mounted: string[];
}

export interface SuspendAnswer {
  ok: true;
  /** Guest paths unmounted by this request, in unmount order (the reverse of mount order). */
  unmounted: string[];
}

/** The steps of rebirth and resume, named in a failure. */
export type ControlStep = 'request' | 'reseed' | 'clock' | 'config' | 'keys' | 'hostname' | 'mounts' | 'sync' | 'unmount';

/** Any op that failed. Steps before `step` were done; none after it were tried. */
export interface ControlFailure {
  ok: false;
  /** What went wrong and what to do about it. */
  error: string;
  /** The step that failed, when the request got that far. */
  step?: ControlStep;
  /** suspend: the mounts that were busy (everything else was mounted again). */
  busy?: string[];
  /** rebirth/resume: the mounts that did succeed before one failed. */
  mounted?: string[];
}

/** The answer of each op when it succeeded. */
export interface ControlAnswers {
  rebirth: RebirthAnswer;
  suspend: SuspendAnswer;
  resume: ResumeAnswer;
}

/** What the agent answers to a request of op `Op`. */
export type ControlAnswer<Op extends ControlOp = ControlOp> = ControlAnswers[Op] | ControlFailure;
