// `cove ssh-config NAME`: the OpenSSH config coved wrote for the sandbox.
import * as fs from 'node:fs';
import { vmFile } from '../../../contract/layout';
import { checkName } from '../../../contract/names';
import { one, type Command } from '../command';
import { UsageError } from '../output';

export const sshConfig: Command = {
  name: 'ssh-config',
  usage: 'NAME',
  summary: 'print an OpenSSH config that reaches the sandbox (ssh -F FILE cove-NAME)',
  async run(positionals) {
    const name = checkName(one(positionals, 'sandbox name'));
    const file = vmFile(name, 'sshConfig');
    if (!fs.existsSync(file)) throw new UsageError(`there is no sandbox named ${name}`);
    process.stdout.write(`# ssh -F ${file} cove-${name}\n${fs.readFileSync(file, 'utf8')}`);
    return 0;
  },
};
