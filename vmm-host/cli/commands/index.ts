// Every `cove` command, in the order `cove help` lists them. A new command is one file in this
// folder and one line here.
import type { Command } from '../command';
import { cp } from './cp';
import { daemon } from './daemon';
import { doctor } from './doctor';
import { exec } from './exec';
import { image } from './image';
import { inspect } from './inspect';
import { logs } from './logs';
import { ls } from './ls';
import { ports } from './ports';
import { publish } from './publish';
import { rm } from './rm';
import { shell } from './shell';
import { sshConfig } from './ssh-config';
import { sshProxy } from './ssh-proxy';
import { pause, sleep, start } from './lifecycle';
import { stop } from './stop';
import { unpublish } from './unpublish';
import { up } from './up';
import { version } from './version';

export const COMMANDS: readonly Command[] = [up, ls, inspect, start, stop, sleep, pause, rm, exec, shell, logs, publish, unpublish, ports, cp, sshConfig, sshProxy, doctor, image, daemon, version];

/** The command called `name` (or one of its aliases). */
export function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name || c.aliases?.includes(name));
}
