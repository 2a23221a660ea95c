// The Docker context `cove-<name>` on the host, made and removed with the docker CLI the way
// colima does: created only when `docker context inspect` fails (or points elsewhere), removed
// with --force, and no other context is ever touched.
import * as child_process from 'node:child_process';
import { contextName } from '../../contract/layout';


function run(bin: string, args: string[], timeoutMs = 15_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    child_process.execFile(bin, args, { timeout: timeoutMs, env: process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr: stderr || (err && code !== 0 ? err.message : '') });
    });
  });
}

/** Finds the docker CLI on PATH (or $COVE_DOCKER). */
export async function findDocker(): Promise<string | null> {
  const candidate = process.env.COVE_DOCKER || 'docker';
  const r = await run(candidate, ['--version'], 10_000);
  return r.code === 0 ? candidate : null;
}

/** The endpoint a context points at, or null when there is no such context. */
export async function contextHost(bin: string, name: string): Promise<string | null> {
  const r = await run(bin, ['context', 'inspect', name, '--format', '{{.Endpoints.docker.Host}}']);
  return r.code === 0 ? r.stdout.trim() : null;
}

/** Makes `cove-<vm>` point at `dockerHost`; idempotent. Returns the context name. */
export async function ensureContext(bin: string, vm: string, dockerHost: string): Promise<string> {
  const name = contextName(vm);
  const current = await contextHost(bin, name);
  if (current === dockerHost) return name;
  const args =
    current === null
      ? ['context', 'create', name, '--description', `Cove sandbox ${vm}`, '--docker', `host=${dockerHost}`]
      : ['context', 'update', name, '--docker', `host=${dockerHost}`];
  const r = await run(bin, args);
  // Two coved requests racing to create the same context: the loser finds it made.
  if (r.code !== 0 && (await contextHost(bin, name)) !== dockerHost) {
    throw new Error(`docker ${args.slice(0, 2).join(' ')} ${name} failed: ${r.stderr.trim()}`);
  }
  return name;
}

/** Removes `cove-<vm>` if it exists. */
export async function removeContext(bin: string, vm: string): Promise<void> {
  const name = contextName(vm);
  if ((await contextHost(bin, name)) === null) return;
  const r = await run(bin, ['context', 'rm', '--force', name]);
  if (r.code !== 0 && (await contextHost(bin, name)) !== null) {
    throw new Error(`docker context rm ${name} failed: ${r.stderr.trim()}`);
  }
}
