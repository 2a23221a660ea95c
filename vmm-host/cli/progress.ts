// A progress bar for long coved operations (image build, boot), fed by cove/progress notifications.
// On a terminal it redraws one bar; elsewhere it prints one line per step.
import { SingleBar } from 'cli-progress';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { Notifications, type ProgressEvent } from '../../contract/protocol';

/** Shows the progress of `subjects` (sandbox names, `image`) or of events carrying `token`. */
export function showProgress(conn: MessageConnection, subjects: string[], quiet: boolean, token?: string): () => void {
  const tty = process.stderr.isTTY && !quiet;
  let bar: SingleBar | null = null;
  let last = '';
  const sub = conn.onNotification(Notifications.progress, (e: ProgressEvent) => {
    if (quiet || !(subjects.includes(e.subject) || (token !== undefined && e.token === token))) return;
    const label = `${e.step}: ${e.message}`;
    if (tty) {
      if (!bar) {
        bar = new SingleBar({ format: ' {bar} {percentage}% | {step}', hideCursor: true, clearOnComplete: true, stream: process.stderr, barsize: 30 });
        bar.start(100, 0, { step: label });
      }
      bar.update(Math.round((e.fraction ?? 0) * 100), { step: label });
    } else if (label !== last) {
      process.stderr.write(`cove: ${label}\n`);
    }
    last = label;
  });
  return () => {
    sub.dispose();
    bar?.stop();
  };
}
