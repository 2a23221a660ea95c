// The driver module's public API; coved imports from here only.
export type { Driver, DriverFeatures, VmPids, VmSpec, ShareSpec, MemoryFileSpec, StopOptions, SaveOptions, SaveResult, RestoreOptions } from './driver';
export { QemuDriver, buildQemuArgv, buildVirtiofsdArgv, buildPasstArgv, kernelCmdline, machineArgs } from './qemu';
export { qemuFeatures, toolVersion, parseVersion } from './qemu-features';
export { detectAccel, probeKvm, hostTscKhz, PROBE_MARKER } from './accel';
export type { Accel, AccelResult, DetectAccelOptions } from './accel';
export { qmpCommand, qmpQuit, qmpQueryStatus } from './qmp';
export { findQemu, findQemuImg, findVirtiofsd, requireVirtiofsd, findQemuTools, findPasst } from './tools';
export type { QemuTools } from './tools';
export { createOverlay } from './overlay';
export { processAlive, readPid, signal, waitGone } from './proc';
export { DriverError, DeadlineError, isDriverError, isDeadlineError } from './errors';
export { specFromLayout } from './spec';
export { tcgCacheCheck } from './tcg-cache';
export { guestAslr, guestAslrCheck, guestAslrSetting } from './guest-aslr';
export type { LayoutSpec } from './spec';
