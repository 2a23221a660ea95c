// A VmSpec from Cove's layout: the image's kernel and initrd, the VM folder's disk and config disk.
import * as path from 'node:path';
import { IMAGE, VM } from '../../contract/layout';
import type { VmSpec } from './driver';

export type LayoutSpec = Omit<VmSpec, 'dir' | 'kernel' | 'initrd' | 'disk' | 'configDisk'> & { imageDir: string; vmDir: string };

export function specFromLayout(s: LayoutSpec): VmSpec {
  const { imageDir, vmDir, ...rest } = s;
  return {
    ...rest,
    dir: path.resolve(vmDir),
    kernel: path.join(path.resolve(imageDir), IMAGE.kernel),
    initrd: path.join(path.resolve(imageDir), IMAGE.initrd),
    disk: path.join(path.resolve(vmDir), VM.disk),
    configDisk: path.join(path.resolve(vmDir), VM.configDisk),
  };
}
