// The suspend op's check that a share is held by another mount namespace (a container's bind mount),
// against a /proc made of files: such a share is busy, though unmounting it in the guest would work.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { shareHeldElsewhere } from '../../agent/mounts';

function fakeProc(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-proc-'));
  const proc = (pid: string, ns: string, mountinfo: string, comm: string) => {
    fs.mkdirSync(path.join(root, pid, 'ns'), { recursive: true });
    fs.symlinkSync(`mnt:[${ns}]`, path.join(root, pid, 'ns', 'mnt'));
    fs.writeFileSync(path.join(root, pid, 'mountinfo'), mountinfo);
    fs.writeFileSync(path.join(root, pid, 'comm'), `${comm}\n`);
  };
  const hostNs = '22 1 0:52 / /work/ws rw,relatime - 9p cove-ws rw,trans=virtio\n24 1 0:53 / /other rw - 9p cove-x rw\n';
  proc('self', '4026531840', hostNs, 'node');
  proc('1', '4026531840', hostNs, 'cove-init');
  // A container whose /src is a bind mount of the share (the same superblock, 0:52).
  proc('468', '4026532200', '90 80 0:52 / /src rw,relatime - 9p cove-ws rw\n', 'sleep');
  // Another container that mounts only something else.
  proc('501', '4026532300', '91 81 0:99 / /data rw - ext4 /dev/vda rw\n', 'httpd');
  return root;
}

test('a share bind-mounted in a container namespace is held elsewhere; one only the guest has is not', () => {
  const root = fakeProc();
  try {
    assert.deepEqual(shareHeldElsewhere('/work/ws', root), ['pid 468 (sleep)']);
    assert.deepEqual(shareHeldElsewhere('/other', root), []);
    assert.deepEqual(shareHeldElsewhere('/not/mounted', root), []);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
