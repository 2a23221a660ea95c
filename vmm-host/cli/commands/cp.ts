// `cove cp SRC DST`: copies files and folders between the host and a guest over SFTP.
import type { Command } from '../command';
import { cpCommand } from '../guest';
import { UsageError } from '../output';

export const cp: Command = {
  name: 'cp',
  usage: 'SRC DST',
  summary: 'copy between the host and a guest; one side is NAME:/absolute/path; folders are copied whole',
  async run(positionals) {
    if (positionals.length !== 2) throw new UsageError('cove cp SRC DST');
    await cpCommand(positionals[0], positionals[1]);
    return 0;
  },
};
