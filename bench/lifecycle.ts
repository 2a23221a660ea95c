// Row 7: `cove up` on a sandbox that already runs (against `cove ls`, the floor of any CLI call
// that asks coved something), and stop → start until `docker version` answers through the context
// (against the bare limit's stop, QMP quit, plus its cold boot, both measured earlier in this run).
import { COVE_BIN, cove, docker, log, makeRow, nowMs, ok, timeHost, waitUntil } from './lib';
import type { Suite } from './suite';

export async function lifecycleGroup(suite: Suite): Promise<void> {
  if (!suite.want('life.up') && !suite.want('life.restart')) return;
  const name = await suite.main();
  if (suite.want('life.up')) {
    const ws = suite.workspacePath(name);
    const n = suite.samples(3);
    const up: number[] = [];
    const ls: number[] = [];
    for (let i = 0; i < n; i++) {
      up.push(await timeHost('cove up (already running)', process.execPath, [COVE_BIN, 'up', ws, '--name', name], 120_000));
      ls.push(await timeHost('cove ls', process.execPath, [COVE_BIN, 'ls', '--json'], 120_000));
    }
    suite.add(
      makeRow({ id: 'life.up', what: '`cove up` on a running sandbox', unit: 'ms', better: 'lower', figure: up, baselineWhat: '`cove ls --json` (CLI start + one coved request)', baseline: ls }),
    );
  }
  if (suite.want('life.restart')) {
    const stop: number[] = [];
    const start: number[] = [];
    const total: number[] = [];
    const n = suite.samples(1);
    for (let i = 0; i < n; i++) {
      log(`stop → start ${i + 1}/${n}`);
      const t0 = nowMs();
      ok(await cove(['stop', name], 300_000), 'cove stop');
      const t1 = nowMs();
      ok(await cove(['start', name], 20 * 60_000), 'cove start');
      await waitUntil(`docker version through cove-${name} after start`, 120_000, async () => (await docker(name, ['version'], 60_000)).code === 0, 100);
      const t2 = nowMs();
      stop.push(t1 - t0);
      start.push(t2 - t1);
      total.push((t2 - t0) / 1000);
    }
    const bare = suite.bare.bootMs.map((b, i) => (b + (suite.bare.stopMs[i] ?? 0)) / 1000);
    suite.profile['life.restart'] = { stopMs: stop, startMs: start, bareStopMs: suite.bare.stopMs, bareBootMs: suite.bare.bootMs };
    suite.add(
      makeRow({
        id: 'life.restart',
        what: '`cove stop` → `cove start` → `docker version` answers',
        unit: 's',
        better: 'lower',
        figure: total,
        baselineWhat: 'bare limit: QMP quit + cold boot to /_ping',
        baseline: bare.length ? bare : null,
        note: `stop ${(stop.reduce((a, b) => a + b, 0) / stop.length / 1000).toFixed(1)} s, start ${(start.reduce((a, b) => a + b, 0) / start.length / 1000).toFixed(1)} s (means)`,
      }),
    );
  }
}
