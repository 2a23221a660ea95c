// cove/doctor: what the host has (qemu, virtiofsd, passt, the docker CLI and its plugins), the
// accelerator in use, and what warm start can do here.
import { messageOf } from '../../../contract/errors';
import { missingTool } from '../../../contract/errors';
import type { DoctorCheck, DoctorResult, PluginsResult } from '../../../contract/protocol';
import type { Coved } from '../coved';
import { guestAslrCheck, tcgCacheCheck } from '../../driver';
import { hostChecks } from '../host-checks';
import * as images from '../images';
import { ensurePlugins } from '../plugins';
import { asParams, optBool } from '../validate';

/** host/plugins: installs the newest image's compose and buildx where the docker CLI lacks them. */
export async function plugins(coved: Coved, raw: unknown): Promise<PluginsResult> {
  const check = optBool(asParams(raw), 'check') ?? false;
  if (!coved.dockerBin) throw missingTool('the docker CLI is not installed on this host', 'install the docker CLI (Debian: docker-cli) and run cove up again');
  return ensurePlugins({ dockerBin: coved.dockerBin, imageDir: images.listImages(coved.home).at(0)?.dir ?? null, check });
}

function pluginChecks(r: PluginsResult): DoctorCheck[] {
  return r.plugins.map((p) => ({
    name: `docker ${p.name} plugin`,
    ok: p.source !== 'missing',
    detail:
      p.source === 'missing'
        ? `not installed on the host${p.note ? ` (${p.note})` : ''}`
        : `${p.source === 'cove' ? "Cove's copy of the image's" : 'your own'} ${p.version ?? ''} at ${p.path ?? '?'}`,
    hint: p.source === 'missing' ? `\`cove up\` installs the image's into ${r.dir} (unless --no-plugins)` : undefined,
  }));
}

export async function doctor(coved: Coved): Promise<DoctorResult> {
  const checks = await hostChecks(coved.home);
  checks.push({
    name: 'docker CLI',
    ok: coved.dockerBin !== null,
    detail: coved.dockerBin ? `found (${coved.dockerBin}); contexts are created as cove-<name>` : 'not found',
    hint: coved.dockerBin ? undefined : 'install the docker CLI (Debian: docker.io or docker-cli) to get Docker contexts; DOCKER_HOST=unix://…/docker.sock works without it',
  });
  if (coved.dockerBin) checks.push(...pluginChecks(await plugins(coved, { check: true })));
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
  if ((accel ?? 'tcg') === 'tcg') checks.push({ name: 'TCG translation cache', ...tcgCacheCheck(f.version) });
  checks.push({ name: 'guest address randomization', ...guestAslrCheck(accel ?? 'tcg', f.version) });
  return { checks, accel, accelDetail };
}
