// `cove version`: the version of coved and of its protocol.
import { homeFile } from '../../../contract/layout';
import { Requests } from '../../../contract/protocol';
import { withCoved, type Command } from '../command';

export const version: Command = {
  name: 'version',
  usage: '',
  summary: "coved's version, pid, protocol and home",
  async run() {
    const v = await withCoved((c) => c.sendRequest(Requests.version));
    process.stdout.write(`cove ${v.version} (coved pid ${v.pid}, protocol ${v.protocol}, home ${v.home}, log ${homeFile('covedLog')})\n`);
    return 0;
  },
};
