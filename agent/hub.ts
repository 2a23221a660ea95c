// The agent's live state and the fan-out of its events to every open `cove-events` stream.
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { AgentEvent, DockerdState, HelloEvent, ListeningPort } from '../contract/events';
import { AGENT_VERSION } from './version';

export type EventListener = (event: AgentEvent) => void;

export class EventHub {
  dockerd: DockerdState = 'starting';
  ports: ListeningPort[] = [];
  private readonly listeners = new Set<EventListener>();

  hello(): HelloEvent {
    return {
      type: 'hello',
      agentVersion: AGENT_VERSION,
      kernel: os.release(),
      uptime: uptimeSeconds(),
      dockerd: this.dockerd,
      ports: this.ports.map((p) => ({ ...p })),
    };
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
