// `cove ssh-proxy NAME`: OpenSSH's ProxyCommand, joining stdin and stdout to the sandbox's ssh.sock.
import { one, type Command } from '../command';
import { sshProxyCommand } from '../guest';

export const sshProxy: Command = {
  name: 'ssh-proxy',
  usage: 'NAME',
  summary: "OpenSSH's ProxyCommand for a sandbox (used by the ssh-config file)",
  hidden: true,
  run: (positionals) => sshProxyCommand(one(positionals, 'sandbox name')),
};
