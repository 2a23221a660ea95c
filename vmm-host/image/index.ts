// The image module's public API; coved and the CLI import from here only.
export { buildImage, expectedImageDir } from './build';
export type { BuildImageOptions, BuildImageResult } from './build';
export { listImages, latestImage, verifyImage, assertImageOk, readManifest } from './manifest';
export type { ImageManifest, ImageInfo, VerifyResult } from './manifest';
export { BUILD_STEPS } from './steps';
export type { BuildStepName, ProgressFn } from './steps';
export * from './errors';
export { ImageBuilds } from './builds';
export type { BuildFn, BuildProgress, BuildRequest } from './builds';
