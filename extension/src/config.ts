// The extension's settings, read in one place. `needsReconnect` lists the settings whose change
// means talking to another coved.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { coveHome } from '../../contract/layout';

export class Config {
  static readonly section = 'cove';
  /** Changing these points the extension at another coved: it reconnects. */
  static readonly needsReconnect = ['cove.home', 'cove.covedPath'];

  private get cfg(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration(Config.section);
  }

  /** $COVE_HOME as coved and the CLI see it: the setting, else the environment, else the default. */
  get home(): string {
    const fromSetting = this.cfg.get<string>('home', '').trim();
    if (fromSetting !== '') return path.resolve(expandHome(fromSetting));
    return coveHome();
  }

  /** The coved to start: the setting, else $COVE_COVED, else the one bundled beside this file. */
  covedPath(extensionDir: string): string {
    const fromSetting = this.cfg.get<string>('covedPath', '').trim();
    if (fromSetting !== '') return path.resolve(expandHome(fromSetting));
    if (process.env.COVE_COVED) return path.resolve(process.env.COVE_COVED);
    return path.join(extensionDir, 'dist', 'coved.js');
  }

  get dockerSettings(): boolean {
    return this.cfg.get<boolean>('dockerSettings', true);
  }

  /** Sandboxes opened from this window are never paused or put to sleep when idle. */
  get keepAwake(): boolean {
    return this.cfg.get<boolean>('keepAwake', false);
  }

  /**
   * The settings of a coved this extension starts (coved is per user: one that already runs keeps
   * its own until it restarts): the idle policy (pause after, then sleep after, in seconds; 0 =
   * never), the cap on automatic port forwards per sandbox, and the host ports never forwarded.
   */
  get idleEnv(): NodeJS.ProcessEnv {
    const secs = (key: string, fallback: number) => {
      const v = this.cfg.get<number>(key, fallback);
      return String(Number.isFinite(v) && v >= 0 ? Math.floor(v) : fallback);
    };
    const never = this.cfg.get<Array<number | string>>('neverForward', []).map(String).join(',');
    return {
      COVE_PAUSE_AFTER: secs('pauseAfterSeconds', 300),
      COVE_SLEEP_AFTER: secs('sleepAfterSeconds', 1800),
      COVE_MAX_AUTO_PORTS: secs('maxAutoPorts', 64),
      ...(never !== '' ? { COVE_NEVER_FORWARD: never } : {}),
    };
  }

  /**
   * `cove.mounts` (HOST[:GUEST][:ro] each, as `cove up --mount`), or undefined where the setting is
   * not set anywhere: then Open in Sandbox leaves a sandbox's mounts as they are.
   */
  get mounts(): string[] | undefined {
    const i = this.cfg.inspect<string[]>('mounts');
    const set = i?.workspaceFolderValue ?? i?.workspaceValue ?? i?.globalValue;
    return set === undefined ? undefined : set.filter((s) => typeof s === 'string' && s.trim() !== '');
  }

  /** Whether Open in Sandbox gives a docker CLI without compose or buildx the image's. */
  get installPlugins(): boolean {
    return this.cfg.get<boolean>('installPlugins', true);
  }

  get openTerminalOnStart(): boolean {
    return this.cfg.get<boolean>('openTerminalOnStart', true);
  }
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(process.env.HOME ?? '', p.slice(1)) : p;
}
