// The agent's live state and the fan-out of its events to every open `cove-events` stream.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AgentEvent, DockerdState, HelloEvent, ListeningPort } from '../contract/events';
import { AGENT_VERSION } from './version';

export type EventListener = (event: AgentEvent) => void;

export class EventHub {
  dockerd: DockerdState = 'starting';
  ports: ListeningPort[] = [];
  private readonly listeners = new Set<EventListener>();

  /** `runDir` is the init's run folder, where it records what went wrong at boot (see problems()). */
  constructor(private readonly runDir: string | null = null) {}

  hello(): HelloEvent {
    const problems = this.problems();
    const forwardAddress = this.forwardAddress();
    return {
      type: 'hello',
      agentVersion: AGENT_VERSION,
      kernel: os.release(),
      uptime: uptimeSeconds(),
      dockerd: this.dockerd,
      ports: this.ports.map((p) => ({ ...p })),
      ...(problems.length > 0 ? { problems } : {}),
      ...(forwardAddress ? { forwardAddress } : {}),
    };
  }

  /** The forwarding NIC's address, as the init recorded it when it set the NIC up (init-lib.sh). */
  forwardAddress(): string | null {
    if (!this.runDir) return null;
    try {
      const text = fs.readFileSync(path.join(this.runDir, 'forward-address'), 'utf8').trim();
      return /^\d{1,3}(\.\d{1,3}){3}$/.test(text) ? text : null;
    } catch {
      return null;
    }
  }

  /**
   * What makes this sandbox degraded, one sentence each, read fresh from the records the init
   * (and the control ops) keep: `mount-failed` (`path<TAB>reason` a line) and `config-failed`.
   */
  problems(): string[] {
    const runDir = this.runDir;
    if (!runDir) return [];
    const out: string[] = [];
    const read = (name: string): string => {
      try {
        return fs.readFileSync(path.join(runDir, name), 'utf8');
      } catch {
        return '';
      }
    };
    for (const line of read('config-failed').split('\n')) {
      if (line.trim()) out.push(`config unreadable, booted with defaults: ${line.trim()}`);
    }
    for (const line of read('mount-failed').split('\n')) {
      if (!line.trim()) continue;
      const tab = line.indexOf('\t');
      out.push(tab < 0 ? `workspace mount failed: ${line}` : `workspace mount failed: ${line.slice(0, tab)}: ${line.slice(tab + 1)}`);
    }
    return out;
  }

  /** Subscribes; returns the function that unsubscribes (true the first time). */
  subscribe(listener: EventListener): () => boolean {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  emit(event: AgentEvent): void {
    for (const listener of [...this.listeners]) listener(event);
  }
}

/** Seconds since the guest booted, from /proc/uptime (os.uptime() rounds to whole seconds). */
export function uptimeSeconds(): number {
  try {
    const first = fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0];
    const value = Number(first);
    if (Number.isFinite(value)) return value;
  } catch {
    // Fall through to os.uptime().
  }
  return os.uptime();
}
