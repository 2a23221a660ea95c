// "Cove: Open in Sandbox": boots (or attaches to) the sandbox of a workspace folder, showing coved's
// real boot steps in a progress notification, then points the window's Docker tooling at it.
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { parseMountSpec } from '../../../contract/mount-spec';
import { nameForFolder } from '../../../contract/names';
import { Requests, type SandboxInfo } from '../../../contract/protocol';
import type { Ctx } from '../ctx';
import { realpath } from '../sandboxes';
import { pickFolder } from './pick';

export function openInSandbox(ctx: Ctx) {
  return async (arg?: unknown): Promise<SandboxInfo | undefined> => {
    const folder = await pickFolder(arg);
    if (!folder) return undefined;
    const dir = realpath(folder instanceof vscode.Uri ? folder.fsPath : folder.uri.fsPath);
    try {
      // Relative paths in `cove.mounts` are the opened folder's; `~/` is the home folder.
      const mounts = ctx.config.mounts?.map((spec) => parseMountSpec(spec, dir, os.homedir()));
      const conn = await ctx.connection();
      await ctx.store.refresh(conn);
      const existing = ctx.store.forFolder(dir);
      // coved names a new sandbox after the folder unless that name is taken.
      const expected = existing?.name ?? (ctx.store.get(nameForFolder(dir)) ? undefined : nameForFolder(dir));
      const others = new Set(ctx.store.all().map((s) => s.name));
      const attach = existing?.state === 'running';
      ctx.statusBar.setBusy(attach ? 'attaching' : 'opening sandbox');
      const info = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Cove: ${attach ? 'attaching to' : 'opening'} ${existing?.name ?? path.basename(dir)} in a sandbox`, cancellable: false },
        async (progress) => {
          progress.report({ message: 'connecting to coved' });
          let done = 0;
          let subject = expected;
          const sub = ctx.store.onProgress((e) => {
            if (e.operation !== 'up' && e.operation !== 'start' && e.operation !== 'build') return;
            subject ??= others.has(e.subject) ? undefined : e.subject;
            if (e.subject !== subject) return;
            const pct = e.fraction !== undefined ? Math.round(Math.min(1, Math.max(0, e.fraction)) * 100) : done;
            ctx.log.info(`${e.subject}: ${e.step}: ${e.message}`);
            progress.report({ message: e.message, increment: Math.max(0, pct - done) });
            done = Math.max(done, pct);
          });
          try {
            return await conn.sendRequest(Requests.up, { dir, ...(ctx.config.keepAwake ? { keepAwake: true } : {}), ...(mounts ? { mounts } : {}) });
          } finally {
            sub.dispose();
          }
        },
      );
      if (ctx.config.installPlugins && info.context !== null) {
        const plugins = await conn.sendRequest(Requests.plugins, {}).catch((e: unknown) => {
          ctx.log.warn(`could not install the docker CLI plugins: ${e instanceof Error ? e.message : String(e)}`);
          return null;
        });
        if (plugins && plugins.installed.length > 0) {
          const what = plugins.installed.map((n) => `docker ${n}`).join(' and ');
          ctx.log.info(`installed the image's ${what} into ${plugins.dir} (the docker CLI had none)`);
          void vscode.window.showInformationMessage(`Cove: installed the sandbox image's ${what} for your docker CLI (into ${plugins.dir}); setting cove.installPlugins turns this off.`);
        }
      }
      if (info.mountsNote) void vscode.window.showInformationMessage(`Cove: ${info.mountsNote}`);
      await ctx.store.rememberWindowSandbox(info.name);
      ctx.store.update(info);
      await ctx.docker.sync(info);
      const secs = info.bootSeconds !== null && !attach ? ` in ${info.bootSeconds.toFixed(0)} s` : '';
      ctx.log.info(`sandbox ${info.name} is running${secs} (${info.accel ?? '?'}, ${info.mount}); Docker context ${info.context ?? info.dockerHost}`);
      void vscode.window.showInformationMessage(
        `Cove: sandbox ${info.name} is running${secs} (${(info.accel ?? '?').toUpperCase()}, ${info.mount}). Docker in this window uses ${info.context ?? info.dockerHost}`,
      );
      if (ctx.config.openTerminalOnStart && ctx.terminals.of(info.name).length === 0) ctx.terminals.open(info);
      return info;
    } catch (e) {
      ctx.showError(`opening ${path.basename(dir)} in a sandbox failed`, e);
      return undefined;
    } finally {
      ctx.statusBar.setBusy(undefined);
      void ctx.store.refresh();
    }
  };
}
