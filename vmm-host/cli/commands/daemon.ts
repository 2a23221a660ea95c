// `cove daemon`: coved in the foreground.
import { coveHome } from '../../../contract/layout';
import type { Command } from '../command';
import { UsageError } from '../output';

export const daemon: Command = {
  name: 'daemon',
  usage: '',
  summary: 'run coved in the foreground (the CLI and the extension otherwise start it on demand)',
  run(positionals) {
    if (positionals.length > 0) throw new UsageError('cove daemon takes no arguments');
    process.env.COVE_HOME = coveHome();
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require('../../coved/main');
    return new Promise<number>(() => undefined);
  },
};
