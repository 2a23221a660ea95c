// Checks a kernel configuration (the text of /boot/config-*) against kernel/features.json: the
// kernel features dockerd and the sandbox need. Used by the image build, and from the command line:
//   node out/kernel/check.js <config>     exits 1 naming every missing feature
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Feature {
  name: string;
  description: string;
  /** Every group must be satisfied; a group is satisfied by any one of its CONFIG_ options. */
  all: string[][];
  /** When true, the options must be built in (=y); a module (=m) does not count. */
  builtin?: boolean;
}

export interface KernelCheckResult {
  missing: Feature[];
}

/** The feature list shipped with Cove (kernel/features.json). */
export function loadFeatures(file = featuresFile()): Feature[] {
  const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as { features: Feature[] };
  return doc.features;
}

/** Where kernel/features.json is: next to this file in the source tree, or two levels up from out/. */
export function featuresFile(): string {
  const candidates = [
    path.join(__dirname, 'features.json'),
    path.join(__dirname, '..', '..', 'kernel', 'features.json'),
  ];
  for (const c of candidates) if (fs.existsSync(c)) return c;
  throw new Error(`kernel/features.json not found (looked in ${candidates.join(', ')})`);
}

/** Parses `CONFIG_X=y|m|"str"|n` lines; `# CONFIG_X is not set` lines are simply absent. */
export function parseKernelConfig(configText: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of configText.split('\n')) {
    const m = /^CONFIG_([A-Za-z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1], m[2]);
  }
  return out;
}

export function checkKernelConfig(configText: string, features: Feature[] = loadFeatures()): KernelCheckResult {
  const config = parseKernelConfig(configText);
  const ok = (opt: string, builtin: boolean): boolean => {
    const v = config.get(opt.replace(/^CONFIG_/, ''));
    return v === 'y' || (!builtin && v === 'm');
  };
  const missing = features.filter((f) => !f.all.every((group) => group.some((opt) => ok(opt, f.builtin === true))));
  return { missing };
}

/** One line per missing feature, naming the options that would satisfy it. */
export function describeMissing(missing: Feature[]): string[] {
  return missing.map(
    (f) =>
      `${f.name}: ${f.description} (needs ${f.all.map((g) => g.map((o) => `CONFIG_${o}`).join(' or ')).join(' and ')}` +
      `${f.builtin ? ' built in (=y)' : ' (=y or =m)'})`,
  );
}

function main(argv: string[]): number {
  if (argv.length !== 1) {
    process.stderr.write('usage: node out/kernel/check.js <kernel config file>\n');
    return 2;
  }
  const text = fs.readFileSync(argv[0], 'utf8');
  const { missing } = checkKernelConfig(text);
  if (missing.length === 0) {
    process.stdout.write(`${argv[0]}: all ${loadFeatures().length} kernel features present\n`);
    return 0;
  }
  process.stderr.write(`${argv[0]}: missing ${missing.length} kernel feature(s):\n`);
  for (const line of describeMissing(missing)) process.stderr.write(`  ${line}\n`);
  return 1;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
