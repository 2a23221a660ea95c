// cove/doctor: what the host has (qemu, virtiofsd, passt, the docker CLI and its plugins), the
// accelerator in use, and what warm start can do here.
import { messageOf } from '../../../contract/errors';
import type { DoctorResult } from '../../../contract/protocol';
import type { Coved } from '../coved';
import { hostChecks, pluginChecks } from '../host-checks';
import * as images from '../images';

export async function doctor(coved: Coved): Promise<DoctorResult> {
  const checks = await hostChecks(coved.home);
  checks.push({
    name: 'docker CLI',
    ok: coved.dockerBin !== null,
    detail: coved.dockerBin ? `found (${coved.dockerBin}); contexts are created as cove-<name>` : 'not found',
    hint: coved.dockerBin ? undefined : 'install the docker CLI (Debian: docker.io or docker-cli) to get Docker contexts; DOCKER_HOST=unix://…/docker.sock works without it',
  });
  if (coved.dockerBin) checks.push(...(await pluginChecks(coved.dockerBin)));
  const image = images.listImages(coved.home).at(0);
  let accel: DoctorResult['accel'] = null;
  let accelDetail = 'no image built yet: the KVM probe runs at the first boot';
  if (image) {
    try {
      const r = await coved.accel(image.dir);
      accel = r.accel;
      accelDetail = r.reason;
    } catch (e) {
      accelDetail = messageOf(e);
    }
  }
  const f = coved.driver(accel ?? 'tcg').features;
  checks.push({
    name: 'warm start',
    ok: f.snapshots,
    detail: f.snapshots
      ? `${f.version}: new sandboxes restore from a saved template and idle ones sleep to disk; the folder is shared over ${f.saveWithShare.virtiofs === 'always' ? 'virtio-fs' : '9p'} when saved${f.upgradeNote ? ` (${f.upgradeNote})` : ''}`
      : `${f.version}: cannot save VMs; every start is a cold boot`,
    hint: f.snapshots ? undefined : 'install qemu-system-x86 (QEMU >= 7.2)',
  });
  return { checks, accel, accelDetail };
}
