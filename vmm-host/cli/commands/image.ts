// `cove image build|ls|prune`: the guest images under $COVE_HOME/images.
import * as path from 'node:path';
import { Requests } from '../../../contract/protocol';
import { withCoved, type Command } from '../command';
import { UsageError, printJson, printTable } from '../output';
import { showProgress } from '../progress';

/** A version from an image's manifest, or `-` where it names none. */
const versionOf = (versions: Record<string, string>, what: string): string => (what in versions ? versions[what] : '-');

const SUBCOMMANDS = 'cove image build [--force] | cove image ls [--json] | cove image prune';

export const image: Command = {
  name: 'image',
  usage: 'build [--force] | ls [--json] | prune',
  summary: 'build the guest image (cached by recipe), list the built images, or remove those no sandbox uses (the newest is kept)',
  flags: {
    force: { type: 'boolean', short: 'f', help: 'build: rebuild even when the image is cached' },
    json: { type: 'boolean', help: 'print the result as JSON' },
  },
  async run(positionals, o) {
    const [sub, ...extra] = positionals;
    if (extra.length > 0) throw new UsageError(SUBCOMMANDS);
    if (sub === 'build') {
      const r = await withCoved(async (c) => {
        const progressToken = `cli-${process.pid}-${Date.now()}`;
        const stop = showProgress(c, ['image'], o.json === true, progressToken);
        try {
          return await c.sendRequest(Requests.imageBuild, { force: o.force === true, progressToken });
        } finally {
          stop();
        }
      });
      if (o.json) printJson(r);
      else process.stdout.write(`${r.cached ? 'used the cached image' : 'built the image'} ${path.basename(r.image.dir)} in ${r.seconds.toFixed(1)} s\n`);
      return 0;
    }
    if (sub === 'ls') {
      const list = await withCoved((c) => c.sendRequest(Requests.imageList));
      if (o.json) printJson(list);
      else printTable([['IMAGE', 'BUILT', 'DOCKER', 'KERNEL', 'DIR'], ...list.map((i) => [`${i.tier}-${i.hash}`, i.builtAt, versionOf(i.versions, 'docker'), versionOf(i.versions, 'kernel'), i.dir])]);
      return 0;
    }
    if (sub === 'prune') {
      const removed = await withCoved((c) => c.sendRequest(Requests.imagePrune));
      if (o.json) printJson(removed);
      else process.stdout.write(removed.length ? removed.map((d) => `removed ${d}\n`).join('') : 'nothing to remove\n');
      return 0;
    }
    throw new UsageError(SUBCOMMANDS);
  },
};
