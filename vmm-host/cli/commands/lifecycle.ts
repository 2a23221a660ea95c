// `cove start|sleep|pause NAME`: one request on one sandbox, with the progress it reports, then its state.
import { checkName } from '../../../contract/names';
import { Requests, type NameParams, type SandboxInfo } from '../../../contract/protocol';
import type { RequestType } from 'vscode-jsonrpc';
import { one, withCoved, type Command } from '../command';
import { showProgress } from '../progress';

function lifecycle(name: string, summary: string, request: RequestType<NameParams, SandboxInfo, void>): Command {
  return {
    name,
    usage: 'NAME',
    summary,
    async run(positionals) {
      const sandbox = checkName(one(positionals, 'sandbox name'));
      const info = await withCoved(async (c) => {
        const stop = showProgress(c, [sandbox], false);
        try {
          return await c.sendRequest(request, { name: sandbox });
        } finally {
          stop();
        }
      });
      process.stdout.write(`sandbox ${info.name} is ${info.state}\n`);
      return 0;
    },
  };
}

export const start = lifecycle('start', 'start a stopped sandbox (or wake a paused or sleeping one)', Requests.start);
export const sleep = lifecycle('sleep', 'save a running sandbox to disk and end its VM; the next connection to it (or cove start) wakes it', Requests.sleep);
export const pause = lifecycle('pause', 'pause a running sandbox (no CPU, memory kept); the next connection to it (or cove start) resumes it', Requests.pause);
