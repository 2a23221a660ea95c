// Renders the rows: a fixed-width table for the terminal, the same as Markdown for results/*.md.
import type { MachineFacts, Row } from './lib';

function num(x: number): string {
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  if (a >= 10) return x.toFixed(2);
  return x.toFixed(3);
}

export function cells(r: Row): string[] {
  const ratio = r.ratio === null ? '-' : `${r.ratio.toFixed(2)}×`;
  const spread = (s: Row['figure'] | null) => (s ? `${num(s.min)} / ${num(s.median)} / ${num(s.max)}` : '-');
  return [
    r.id,
    `${num(r.figure.median)} ${r.unit}`,
    r.baseline ? `${num(r.baseline.median)} ${r.unit}` : '-',
    `${ratio} (${r.better} is better)`,
    `${r.figure.n} / ${r.baseline?.n ?? 0}`,
    spread(r.figure),
    spread(r.baseline),
    r.goal ? `${r.goal.met ? 'met' : 'MISSED'}: ${r.goal.text}` : '',
  ];
}

const HEAD = ['row', 'figure', 'baseline', 'ratio', 'runs (fig / base)', 'figure min / median / max', 'baseline min / median / max', 'goal'];

export function textTable(rows: Row[]): string {
  const all = [HEAD, ...rows.map(cells)];
  const w = HEAD.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd();
  return [line(HEAD), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map((r) => line(cells(r)))].join('\n');
}

export function markdown(rows: Row[], facts: MachineFacts, meta: { started: string; seconds: number; runs: number; only: string[]; errors: string[] }): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const out: string[] = [];
  out.push(`# Cove bench, ${meta.started}`, '');
  out.push(
    `Machine: ${facts.cores} cores (${facts.cpuModel}), ${facts.memMiB} MiB, host kernel ${facts.hostKernel}, accel **${facts.accel}** (${facts.accelReason}), ${facts.qemu}, node ${facts.node}; load average at start ${facts.loadAvgAtStart.join(' ')}.`,
    `VMs: ${facts.vmCpus} vCPUs, ${facts.vmMemoryMiB} MiB each (the bare limit too). Runs multiplier ${meta.runs}${meta.only.length ? `, only ${meta.only.join(', ')}` : ''}; the suite took ${(meta.seconds / 60).toFixed(1)} min.`,
    '',
  );
  out.push(`| ${HEAD.join(' | ')} |`, `|${HEAD.map(() => '---').join('|')}|`);
  for (const r of rows) out.push(`| ${cells(r).map(esc).join(' | ')} |`);
  out.push('', '## What each row measures', '');
  for (const r of rows) out.push(`- **${r.id}** — ${r.what}; baseline: ${r.baselineWhat}.${r.note ? ` ${r.note}.` : ''}`);
  if (meta.errors.length) out.push('', '## Errors', '', ...meta.errors.map((e) => `- ${e.split('\n')[0]}`));
  return out.join('\n') + '\n';
}
