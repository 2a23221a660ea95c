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

  get openTerminalOnStart(): boolean {
    return this.cfg.get<boolean>('openTerminalOnStart', true);
  }
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(process.env.HOME ?? '', p.slice(1)) : p;
}
