// `npm run bench [-- --json] [--only ROW[,ROW…]] [--runs N]`: Cove's figures against their limits,
// each baseline measured in the same run on the same machine, as ratios. See bench/README.md.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { apiGroup, loadGroup, transportGroup } from './api';
import { bootGroup } from './boot';
import { warmGroup } from './warm';
import { memWarmGroup } from './mem-warm';
import { aslrGroup } from './aslr';
import { lifecycleGroup } from './lifecycle';
import { RESULTS, VM_CPUS, VM_MEMORY_MIB, log, machineBase, qemuVersionLine, type MachineFacts } from './lib';
import { portsGroup } from './ports';
import { Suite } from './suite';
import { markdown, textTable } from './table';
import { workspace9pGroup, workspaceGroup } from './workspace';

const USAGE = `usage: npm run bench -- [--json] [--only ROW[,ROW…]] [--runs N]
  --json        print the results as JSON instead of the table
  --only ROW    run only these rows or groups (prefix match): boot, mem, api, load, port, fs,
                fs.virtiofs, fs.9p, life, ssh, or a row id such as fs.virtiofs.seqread
  --runs N      multiply every row's samples (default 1: boots once, pings 20 times, …)
Results go to bench/results/<timestamp>.json and .md.`;

const FS_ROWS = ['seqwrite', 'seqread', 'create', 'stat', 'read', 'delete', 'git'];

/** Every row the suite can produce, by id; `--only` must select at least one of them per selector. */
export const ROW_IDS: readonly string[] = [
  'boot.cold',
  'mem.idle',
  'mem.idle.warm',
  'mem.fit16g',
  'run.aslr',
  'run.aslr.tcg',
  'boot.warm',
  'wake.paused',
  'wake.disk',
  'mem.asleep',
  'api.ping',
  'api.ping.keepalive',
  'api.ps20',
  'api.ps20.cli',
  'load.100m',
  'ssh.tput',
  'ssh.tput.ssh',
  'ssh.tput.cp',
  'ssh.tput.cpget',
  'port.latency',
  'port.tput',
  ...FS_ROWS.map((k) => `fs.virtiofs.${k}`),
  ...FS_ROWS.map((k) => `fs.9p.${k}`),
  'life.up',
  'life.restart',
];

/** The `--only` selectors that select no row (the same prefix match as Suite.want). */
export function unknownSelectors(only: string[], rows: readonly string[] = ROW_IDS): string[] {
  return only.filter((o) => !rows.some((id) => id === o || id.startsWith(`${o}.`) || o.startsWith(`${id}.`)));
}

/** The groups in the order they run; later ones reuse the sandbox the boot group left running. */
const GROUPS: Array<[string, (s: Suite) => Promise<void>]> = [
  ['boot + memory', bootGroup],
  ['warm idle memory', memWarmGroup],
  ['address randomization', aslrGroup],
  ['warm start and sleep', warmGroup],
  ['api', apiGroup],
  ['load', loadGroup],
  ['transport', transportGroup],
  ['ports', portsGroup],
  ['workspace', workspaceGroup],
  ['lifecycle', lifecycleGroup],
  ['workspace 9p', workspace9pGroup],
];

function qemuVersion(): string {
  return qemuVersionLine().replace(/^QEMU emulator version /, 'QEMU ');
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ options: { json: { type: 'boolean' }, only: { type: 'string', multiple: true }, runs: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const runs = values.runs === undefined ? 1 : Number(values.runs);
  if (!(runs > 0 && runs <= 50)) {
    process.stderr.write(`--runs must be a number from 1 to 50\n${USAGE}\n`);
    return 2;
  }
  const only = (values.only ?? []).flatMap((o) => o.split(',')).map((o) => o.trim()).filter(Boolean);
  const unknown = unknownSelectors(only);
  if (unknown.length > 0) {
    // A typo must not run nothing and pass: say which selector matched no row, and list the rows.
    process.stderr.write(`--only ${unknown.join(',')}: no such row or group; the rows are:\n${ROW_IDS.map((id) => `  ${id}`).join('\n')}\n${USAGE}\n`);
    return 2;
  }
  const suite = new Suite({ runs, only, json: !!values.json });
  const errors: string[] = [];
  let interrupted = false;
  const onSignal = (sig: string) => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: cleaning up the sandboxes and VMs this run started`);
    void suite.cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  const t0 = Date.now();
  try {
    await suite.prepare();
    for (const [name, group] of GROUPS) {
      if (interrupted) break;
      const g0 = Date.now();
      try {
        await group(suite);
      } catch (e) {
        const msg = `${name}: ${(e as Error).message}`;
        errors.push(msg);
        log(`FAILED ${msg}`);
      }
      log(`group ${name} done in ${((Date.now() - g0) / 1000).toFixed(0)} s`);
    }
  } catch (e) {
    errors.push(`prepare: ${(e as Error).message}`);
    log(`FAILED prepare: ${(e as Error).message}`);
  } finally {
    await suite.cleanup().catch((e: unknown) => log(`clean-up failed: ${(e as Error).message}`));
  }
  const seconds = (Date.now() - t0) / 1000;
  const facts: MachineFacts = {
    ...machineBase(),
    accel: suite.accel?.accel ?? 'unknown',
    accelReason: suite.accel?.reason ?? '',
    qemu: qemuVersion(),
    vmCpus: VM_CPUS,
    vmMemoryMiB: VM_MEMORY_MIB,
  };
  const started = suite.started.toISOString();
  const result = { started, seconds, runs, only, machine: facts, rows: suite.rows, profile: suite.profile, errors };
  fs.mkdirSync(RESULTS, { recursive: true });
  const stamp = started.replace(/[:]/g, '-').replace(/\..*$/, '');
  const base = path.join(RESULTS, stamp);
  fs.writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  fs.writeFileSync(`${base}.md`, markdown(suite.rows, facts, { started, seconds, runs, only, errors }));
  if (values.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else {
    process.stdout.write(`\nCove bench — ${facts.cores} cores, accel ${facts.accel}, VMs ${VM_CPUS} vCPU / ${VM_MEMORY_MIB} MiB, ${(seconds / 60).toFixed(1)} min\n\n`);
    process.stdout.write(textTable(suite.rows) + '\n\n');
    const goals = suite.rows.filter((r) => r.goal);
    process.stdout.write(`goals: ${goals.filter((r) => r.goal!.met).length} met, ${goals.filter((r) => !r.goal!.met).length} missed\n`);
    if (errors.length) process.stdout.write(`errors:\n${errors.map((e) => `  ${e.split('\n')[0]}`).join('\n')}\n`);
    process.stdout.write(`results: ${base}.json, ${base}.md\n`);
  }
  return errors.length ? 1 : 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
