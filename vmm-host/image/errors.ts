// Typed errors of the image build. Each message says what went wrong; each `hint` says what to do
// next. Guards (`isXError`) work across module copies because they test `name`, not the prototype.

export class ImageError extends Error {
  /** What the user should do next, as one sentence. */
  readonly hint: string;
  constructor(message: string, hint: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ImageError';
    this.hint = hint;
  }
}

/** A host tool the build needs is not installed. */
export class MissingToolError extends ImageError {
  readonly tool: string;
  readonly aptPackage: string;
  constructor(tool: string, aptPackage: string) {
    super(
      `${tool} is not installed`,
      `install it with: sudo apt-get install ${aptPackage} (or run scripts/setup-image-deps.sh)`,
    );
    this.name = 'MissingToolError';
    this.tool = tool;
    this.aptPackage = aptPackage;
  }
}

/** The file system holding $COVE_HOME ran out (or would run out) of space. */
export class DiskFullError extends ImageError {
  readonly dir: string;
  readonly freeBytes: number;
  readonly neededBytes: number;
  constructor(dir: string, freeBytes: number, neededBytes: number, options?: { cause?: unknown }) {
    super(
      `not enough disk space in ${dir}: free ${formatBytes(freeBytes)}, need about ${formatBytes(neededBytes)}`,
      'free some space there (old images under $COVE_HOME/images can be deleted) or point COVE_HOME at a larger disk',
      options,
    );
    this.name = 'DiskFullError';
    this.dir = dir;
    this.freeBytes = freeBytes;
    this.neededBytes = neededBytes;
  }
}

/** The Debian mirror could not be found in the host's apt configuration or could not be reached. */
export class MirrorError extends ImageError {
  readonly mirror: string | null;
  constructor(message: string, mirror: string | null, hint?: string, options?: { cause?: unknown }) {
    super(
      message,
      hint ??
        'check the network path to the Debian mirror, or set COVE_DEBIAN_MIRROR to a reachable Debian mirror URL',
      options,
    );
    this.name = 'MirrorError';
    this.mirror = mirror;
  }
}

/** The agent bundle the image embeds does not exist yet. */
export class AgentBundleMissingError extends ImageError {
  readonly path: string;
  constructor(bundlePath: string) {
    super(`the agent bundle ${bundlePath} does not exist`, 'run npm run build first');
    this.name = 'AgentBundleMissingError';
    this.path = bundlePath;
  }
}

/** The chosen kernel lacks features dockerd or the sandbox need. */
export class KernelFeatureError extends ImageError {
  readonly missing: string[];
  constructor(missing: string[]) {
    super(
      `the guest kernel lacks: ${missing.join(', ')}`,
      'pick a kernel whose configuration enables them (see kernel/README.md and kernel/features.json)',
    );
    this.name = 'KernelFeatureError';
    this.missing = missing;
  }
}

/** A build step failed (a command exited non-zero); the log file has the details. */
export class BuildStepError extends ImageError {
  readonly step: string;
  readonly logFile: string | null;
  constructor(step: string, message: string, logFile: string | null, options?: { cause?: unknown }) {
    super(
      `image build step ${step} failed: ${message}`,
      logFile ? `see ${logFile} for the full output` : 'run the build again; if it fails again, report it with its output',
      options,
    );
    this.name = 'BuildStepError';
    this.step = step;
    this.logFile = logFile;
  }
}

/** An image on disk is incomplete or damaged. */
export class ImageCorruptError extends ImageError {
  readonly dir: string;
  readonly problems: string[];
  constructor(dir: string, problems: string[]) {
    super(`image ${dir} is damaged: ${problems.join('; ')}`, 'delete that folder and build the image again (cove image build --force)');
    this.name = 'ImageCorruptError';
    this.dir = dir;
    this.problems = problems;
  }
}

/** Another build held the lock longer than we were willing to wait. */
export class LockTimeoutError extends ImageError {
  readonly lockFile: string;
  constructor(lockFile: string, holderPid: number | null, waitedMs: number) {
    super(
      `timed out after ${Math.round(waitedMs / 1000)} s waiting for the image build lock ${lockFile}` +
        (holderPid ? ` (held by pid ${holderPid})` : ''),
      'wait for the other build to finish, or stop it; a lock whose process is gone is cleared automatically',
    );
    this.name = 'LockTimeoutError';
    this.lockFile = lockFile;
  }
}

export function isImageError(e: unknown): e is ImageError {
  return e instanceof Error && 'hint' in e && typeof e.hint === 'string';
}
export function isMissingToolError(e: unknown): e is MissingToolError {
  return e instanceof Error && e.name === 'MissingToolError';
}
export function isDiskFullError(e: unknown): e is DiskFullError {
  return e instanceof Error && e.name === 'DiskFullError';
}
export function isMirrorError(e: unknown): e is MirrorError {
  return e instanceof Error && e.name === 'MirrorError';
}
export function isAgentBundleMissingError(e: unknown): e is AgentBundleMissingError {
  return e instanceof Error && e.name === 'AgentBundleMissingError';
}
export function isKernelFeatureError(e: unknown): e is KernelFeatureError {
  return e instanceof Error && e.name === 'KernelFeatureError';
}
export function isBuildStepError(e: unknown): e is BuildStepError {
  return e instanceof Error && e.name === 'BuildStepError';
}
export function isImageCorruptError(e: unknown): e is ImageCorruptError {
  return e instanceof Error && e.name === 'ImageCorruptError';
}
export function isLockTimeoutError(e: unknown): e is LockTimeoutError {
  return e instanceof Error && e.name === 'LockTimeoutError';
}

export function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(1)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(0)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${n} B`;
}
