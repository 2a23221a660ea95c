// Watches dockerd by polling GET /_ping on its unix socket. The first answer since the agent
// started writes the ready marker and emits `ready`; every change of state emits `dockerd`.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { DockerdState } from '../../contract/events';
import { uptimeSeconds, type EventHub } from '../hub';
import { errorText, log } from '../log';

const PING_TIMEOUT_MS = 3000;

export function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath, path: '/_ping', method: 'GET', timeout: PING_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

export function watchDockerd(hub: EventHub, socketPath: string, readyMarker: string, pollMs: number): () => void {
  let stopped = false;
  let ready = false;
  let timer: NodeJS.Timeout | undefined;
  const setState = (state: DockerdState): void => {
    if (hub.dockerd === state) return;
    log(`dockerd: ${hub.dockerd} -> ${state}`);
    hub.dockerd = state;
    hub.emit({ type: 'dockerd', state });
  };
  const tick = async (): Promise<void> => {
    const up = await ping(socketPath);
    if (stopped) return;
    if (up) {
      setState('running');
      if (!ready) {
        ready = true;
        // A restarted agent keeps the boot's first readiness time, which the marker holds.
        let bootSeconds = previousReadiness(readyMarker);
        if (bootSeconds === null) {
          bootSeconds = Math.round(uptimeSeconds() * 1000) / 1000;
          try {
            fs.mkdirSync(path.dirname(readyMarker), { recursive: true });
            fs.writeFileSync(readyMarker, `${bootSeconds}\n`);
          } catch (err) {
            log(`dockerd: cannot write the ready marker ${readyMarker}: ${errorText(err)}`);
          }
        }
        log(`ready: dockerd answered /_ping ${bootSeconds}s after boot`);
        const problems = hub.problems();
        hub.emit({ type: 'ready', bootSeconds, ...(problems.length > 0 ? { problems } : {}) });
      }
    } else if (hub.dockerd === 'running') {
      setState('stopped');
    }
    timer = setTimeout(() => void tick(), pollMs);
    timer.unref();
  };
  void tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}

/** The seconds-after-boot written in an existing ready marker, or null. */
function previousReadiness(readyMarker: string): number | null {
  try {
    const value = Number(fs.readFileSync(readyMarker, 'utf8').trim());
    return Number.isFinite(value) && value >= 0 && value <= uptimeSeconds() ? value : null;
  } catch {
    return null;
  }
}
