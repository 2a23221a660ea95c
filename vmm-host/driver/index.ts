// The driver module's public API; coved imports from here only.
export type { Driver, DriverFeatures, VmPids, StopOptions } from './driver';
export { QemuDriver, buildQemuArgv, buildVirtiofsdArgv, buildPasstArgv, kernelCmdline, startQemu, stopQemu, isRunning, readPid } from './qemu';
export type { QemuSpec, MountSpec } from './qemu';
export { detectAccel, probeKvm, hostTscKhz, PROBE_MARKER } from './accel';
export type { Accel, AccelResult, DetectAccelOptions } from './accel';
export { encodeConfigDisk, decodeConfigDisk, writeConfigDisk, CONFIG_DISK_MAGIC, CONFIG_DISK_SIZE, DEFAULT_NETWORK } from '../../contract/config-disk';
export type { GuestConfig, GuestMount } from '../../contract/config-disk';
export { qmpCommand, qmpQuit, qmpQueryStatus } from './qmp';
export { findQemu, findQemuImg, findVirtiofsd, requireVirtiofsd, findQemuTools, findPasst } from './tools';
export type { QemuTools } from './tools';
export { createOverlay } from './overlay';
export { DriverError, DeadlineError, isDriverError, isDeadlineError, waitFor } from './errors';
