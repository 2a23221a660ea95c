// The build's steps, in order, with rough weights (share of a cold build's time) so a progress bar
// moves evenly. A cached build reports only `cached`.
export const BUILD_STEPS = [
  { name: 'debootstrap', weight: 0.42, title: 'Installing Debian packages into the root file system' },
  { name: 'kernel', weight: 0.1, title: 'Fetching and checking the guest kernel' },
  { name: 'rootfs', weight: 0.12, title: 'Assembling the root file system' },
  { name: 'modules', weight: 0.08, title: 'Installing kernel modules' },
  { name: 'initramfs', weight: 0.04, title: 'Building the initramfs' },
  { name: 'disk', weight: 0.14, title: 'Writing the base disk' },
  { name: 'manifest', weight: 0.1, title: 'Checksumming and writing the manifest' },
] as const;

export type BuildStepName = (typeof BUILD_STEPS)[number]['name'] | 'lock' | 'cached';

/**
 * Progress callback: `step` is the current step, `fraction` the whole build's progress in [0, 1],
 * `message` a line for humans.
 */
export type ProgressFn = (step: BuildStepName, fraction: number, message: string) => void;

/** Overall fraction when `step` is `within` (0..1) done. */
export function overallFraction(step: BuildStepName, within: number): number {
  let before = 0;
  for (const s of BUILD_STEPS) {
    if (s.name === step) return Math.min(1, before + s.weight * Math.max(0, Math.min(1, within)));
    before += s.weight;
  }
  return step === 'cached' ? 1 : 0;
}
