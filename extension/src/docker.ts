// Points the window's Docker tooling at its sandbox while the sandbox runs, and puts everything back
// when it stops: the Docker extension's settings (workspace scope) and DOCKER_HOST/DOCKER_CONTEXT
// in the integrated terminals (the environment variable collection). The settings' previous values
// are kept in workspace state, so a window that was closed meanwhile still restores them.
import * as vscode from 'vscode';
import { messageOf } from '../../contract/errors';
import type { SandboxInfo } from '../../contract/protocol';
import { isUp } from './states';

/** The Docker extension's settings Cove writes: Container Tools and the Docker extension before it. */
export const DOCKER_SETTING_KEYS = ['containers.environment', 'docker.environment', 'docker.context'] as const;
type Key = (typeof DOCKER_SETTING_KEYS)[number];

const SAVED_KEY = 'cove.savedDockerSettings';

interface Saved {
  sandbox: string;
  /** The workspace-scope value before Cove wrote it; null when there was none. */
  values: Partial<Record<Key, unknown>>;
}

export class DockerIntegration implements vscode.Disposable {
  /** Operations run one at a time: settings writes must not interleave. */
  private queue: Promise<void> = Promise.resolve();
  /** `name|dockerHost|context` of what was applied, so a repeated sync writes nothing. */
  private applied: string | undefined;
  private appliedSandbox: string | undefined;

  constructor(
    private readonly env: vscode.GlobalEnvironmentVariableCollection,
    private readonly state: vscode.Memento,
    private readonly log: vscode.LogOutputChannel,
    private readonly enabled: () => boolean,
  ) {}

  /** Applies or restores for this window's sandbox; returns when the settings are written. */
  sync(sb: SandboxInfo | undefined): Promise<void> {
    // Paused and sleeping sandboxes keep the settings: their Docker socket wakes them.
    const want = this.enabled() && isUp(sb) ? sb : undefined;
    const next = this.queue.then(() => (want ? this.apply(want) : this.restore()));
    this.queue = next.catch((e: unknown) => this.log.error(`updating the Docker settings failed: ${messageOf(e)}`));
    return this.queue;
  }

  /** The sandbox the window's Docker tooling points at now, if any. */
  get activeSandbox(): string | undefined {
    return this.appliedSandbox ?? this.state.get<Saved>(SAVED_KEY)?.sandbox;
  }

  private async apply(sb: SandboxInfo): Promise<void> {
    const key = `${sb.name}|${sb.dockerHost}|${sb.context}`;
    if (this.applied === key) return;
    this.env.description = `Docker in Cove sandbox ${sb.name}`;
    this.env.replace('DOCKER_HOST', sb.dockerHost);
    if (sb.context) this.env.replace('DOCKER_CONTEXT', sb.context);
    else this.env.delete('DOCKER_CONTEXT');

    if (vscode.workspace.workspaceFolders?.length) {
      const saved = this.state.get<Saved>(SAVED_KEY);
      // Keep the user's own values from the first apply; a switch between sandboxes keeps them too.
      const values: Saved['values'] = saved ? { ...saved.values } : {};
      const cfg = vscode.workspace.getConfiguration();
      const dockerEnv: Record<string, string> = { DOCKER_HOST: sb.dockerHost };
      if (sb.context) dockerEnv.DOCKER_CONTEXT = sb.context;
      const failed = new Set<string>();
      for (const k of DOCKER_SETTING_KEYS) {
        const before = cfg.inspect(k)?.workspaceValue;
        if (!(k in values)) values[k] = before ?? null;
        const original = values[k];
        const value = k === 'docker.context' ? (sb.context ?? undefined) : { ...(isRecord(original) ? original : {}), ...dockerEnv };
        if (value === undefined) continue;
        try {
          await cfg.update(k, value, vscode.ConfigurationTarget.Workspace);
        } catch (e) {
          // Unregistered when the Docker extension is not installed: nothing reads it then.
          this.log.info(`not setting ${k}: ${messageOf(e)}`);
          failed.add(k);
        }
      }
      const kept = Object.fromEntries(Object.entries(values).filter(([k]) => !failed.has(k)));
      await this.state.update(SAVED_KEY, { sandbox: sb.name, values: kept } satisfies Saved);
    }
    this.applied = key;
    this.appliedSandbox = sb.name;
    this.log.info(`Docker tooling of this window points at sandbox ${sb.name} (${sb.context ?? sb.dockerHost})`);
  }

  private async restore(): Promise<void> {
    const saved = this.state.get<Saved>(SAVED_KEY);
    if (!this.applied && !saved && this.env.get('DOCKER_HOST') === undefined) return;
    this.env.clear();
    if (saved && vscode.workspace.workspaceFolders?.length) {
      const cfg = vscode.workspace.getConfiguration();
      for (const [k, v] of Object.entries(saved.values)) {
        try {
          await cfg.update(k, v === null ? undefined : v, vscode.ConfigurationTarget.Workspace);
        } catch (e) {
          this.log.warn(`could not restore ${k}: ${messageOf(e)}`);
        }
      }
    }
    await this.state.update(SAVED_KEY, undefined);
    if (this.applied || saved) this.log.info(`Docker tooling of this window restored (sandbox ${saved?.sandbox ?? '?'} is not running)`);
    this.applied = undefined;
    this.appliedSandbox = undefined;
  }

  dispose(): void {
    // Nothing to undo here: a sandbox outlives the window, and the next window syncs again.
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
