// Row 5: a published container port (forwarded to host 127.0.0.1 by coved) against the same
// container port reached on the guest's loopback: latency of small GETs and throughput of a 32 MiB
// body, with the same node client (bench/guest/probe.js) on both sides, one connection per request.
import { BUSYBOX_TAG, ensureBusybox, guestProbe, hostProbe } from './api';
import { docker, log, makeRow, ok, sh, waitUntil } from './lib';
import type { Suite } from './suite';

const PORT = 28917;
const BIG_MIB = 32;

export async function portsGroup(suite: Suite): Promise<void> {
  if (!suite.want('port.latency') && !suite.want('port.tput')) return;
  const name = await suite.main();
  await ensureBusybox(name);
  await docker(name, ['rm', '-f', 'benchweb'], 120_000);
  ok(
    await docker(name, ['run', '-d', '--name', 'benchweb', '-p', `${PORT}:80`, BUSYBOX_TAG, 'sh', '-c', `head -c ${BIG_MIB * 1048576} /dev/zero > /www/big && exec httpd -f -p 80 -h /www`], 300_000),
    'docker run -p (the web container)',
  );
  try {
    const url = `http://127.0.0.1:${PORT}`;
    await waitUntil(`host 127.0.0.1:${PORT}/big to answer (port forwarding)`, 180_000, async () => (await sh('curl', ['-sf', '-o', '/dev/null', '--max-time', '20', `${url}/big`], 30_000)).code === 0, 500);
    log('the published port answers');
    if (suite.want('port.latency')) {
      const n = suite.samples(20);
      const host: number[] = [];
      const guest: number[] = [];
      for (let half = 0; half < 2; half++) {
        host.push(...(await hostProbe(`${url}/index.html`, Math.ceil(n / 2))).ms);
        guest.push(...(await guestProbe(suite, name, `${url}/index.html`, Math.ceil(n / 2))).ms);
      }
      suite.add(
        makeRow({
          id: 'port.latency',
          what: 'GET a 16-byte file: host 127.0.0.1 → published port → container',
          unit: 'ms',
          better: 'lower',
          figure: host,
          baselineWhat: "the same GET on the guest's loopback (docker-proxy → container)",
          baseline: guest,
        }),
      );
    }
    if (suite.want('port.tput')) {
      const n = suite.samples(3);
      const mibps = (r: { ms: number[]; bytes: number }) => r.ms.map((ms) => r.bytes / 2 ** 20 / (ms / 1000));
      const host = mibps(await hostProbe(`${url}/big`, n));
      const guest = mibps(await guestProbe(suite, name, `${url}/big`, n));
      suite.add(
        makeRow({
          id: 'port.tput',
          what: `GET ${BIG_MIB} MiB: host 127.0.0.1 → published port → container`,
          unit: 'MiB/s',
          better: 'higher',
          figure: host,
          baselineWhat: "the same GET on the guest's loopback",
          baseline: guest,
          goal: (r) => ({ text: "≥ 80 % of the guest's loopback", met: (r.ratio ?? 0) >= 0.8 }),
        }),
      );
    }
  } finally {
    await docker(name, ['rm', '-f', 'benchweb'], 120_000);
  }
}
