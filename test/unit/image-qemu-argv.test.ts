// The qemu command line of docs/guest.md, for TCG with a 9p workspace and KVM with virtio-fs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildQemuArgv as argvOf, buildVirtiofsdArgv as vfsArgvOf, hostfwdCommand, kernelCmdline } from '../../vmm-host/driver/qemu';
import { specFromLayout, type LayoutSpec } from '../../vmm-host/driver/spec';
import { hostTscKhz } from '../../vmm-host/driver/accel';
import { defaultGuestAslr, guestAslr, guestAslrCheck, guestAslrSetting } from '../../vmm-host/driver/guest-aslr';
import { BOUNDED_TCG_CACHE_MIB, DEFAULT_TCG_CACHE_MIB, tcgCacheCheck, tcgCacheMiB } from '../../vmm-host/driver/tcg-cache';

const base = { imageDir: '/h/images/docker-abc', vmDir: '/h/vms/t1', cpus: 2, memoryMiB: 1024, network: 'user' as const };
type OldSpec = Omit<LayoutSpec, 'share'> & { mount: LayoutSpec['share'] };
const toSpec = ({ mount, ...rest }: OldSpec) => specFromLayout({ ...rest, share: mount });
const buildQemuArgv = (s: OldSpec, o?: { incoming?: boolean }) => argvOf(toSpec(s), o);
const buildVirtiofsdArgv = (s: OldSpec) => vfsArgvOf(toSpec(s));

function after(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
}

test('tcg + 9p', () => {
  const argv = buildQemuArgv({ ...base, accel: 'tcg', tscKhz: 2445428, mount: { type: '9p', hostPath: '/home/me/p', readonly: true } });
  assert.deepEqual(after(argv, '-M'), ['microvm,pit=on,pic=on,rtc=on']);
  // QEMU's own translation cache size by default: a smaller one crashes QEMU 7.2 guests (tcg-cache.ts).
  assert.deepEqual(after(argv, '-accel'), ['tcg,thread=single']);
  assert.deepEqual(after(argv, '-cpu'), ['max']);
  assert.deepEqual(after(argv, '-m'), ['1024']);
  assert.deepEqual(after(argv, '-smp'), ['2']);
  assert.deepEqual(after(argv, '-kernel'), ['/h/images/docker-abc/vmlinux']);
  assert.deepEqual(after(argv, '-initrd'), ['/h/images/docker-abc/initrd.img']);
  assert.equal(after(argv, '-append')[0], 'console=ttyS0 reboot=k panic=-1 oops=panic quiet loglevel=4 tsc_early_khz=2445428 tsc=reliable');
  assert.deepEqual(after(argv, '-global'), ['virtio-mmio.force-legacy=false']);
  assert.deepEqual(after(argv, '-drive'), [
    'id=root,file=/h/vms/t1/disk.qcow2,format=qcow2,if=none,cache=writeback,discard=unmap',
    'id=cfg,file=/h/vms/t1/cfg.raw,format=raw,if=none,readonly=on',
  ]);
  assert.deepEqual(after(argv, '-fsdev'), ['local,id=ws,path=/home/me/p,security_model=none,readonly=on']);
  assert.ok(after(argv, '-device').includes('virtio-9p-device,fsdev=ws,mount_tag=cove-ws'));
  assert.ok(after(argv, '-device').includes('virtserialport,chardev=agent,name=cove.agent'));
  assert.ok(after(argv, '-chardev').includes('socket,id=agent,path=/h/vms/t1/agent.sock,server=on,wait=off'));
  assert.ok(after(argv, '-chardev').includes('file,id=con,path=/h/vms/t1/console.log,append=on'));
  assert.deepEqual(after(argv, '-qmp'), ['unix:/h/vms/t1/qmp.sock,server=on,wait=off']);
  assert.deepEqual(after(argv, '-pidfile'), ['/h/vms/t1/qemu.pid']);
  assert.ok(argv.includes('-daemonize') && argv.includes('-nodefaults') && argv.includes('-no-reboot'));
  assert.ok(!argv.some((a) => a.includes('memory-backend') || a.includes('vhost-user-fs')));
});

test('kvm + virtiofs', () => {
  const spec = { ...base, accel: 'kvm' as const, tscKhz: 2445428, mount: { type: 'virtiofs' as const, hostPath: '/home/me/p', readonly: false }, kernelArgsExtra: ['cove.debug'] };
  const argv = buildQemuArgv(spec);
  assert.deepEqual(after(argv, '-M'), ['microvm,pit=on,pic=on,rtc=on,memory-backend=mem']);
  assert.deepEqual(after(argv, '-accel'), ['kvm']);
  assert.deepEqual(after(argv, '-cpu'), ['host']);
  assert.equal(after(argv, '-append')[0], 'console=ttyS0 reboot=k panic=-1 oops=panic quiet loglevel=4 cove.debug');
  assert.deepEqual(after(argv, '-object'), ['memory-backend-memfd,id=mem,size=1024M,share=on']);
  assert.ok(after(argv, '-chardev').includes('socket,id=vfs,path=/h/vms/t1/vfs.sock'));
  assert.ok(after(argv, '-device').includes('vhost-user-fs-device,chardev=vfs,tag=cove-ws'));
  assert.deepEqual(after(argv, '-fsdev'), []);
  assert.deepEqual(buildVirtiofsdArgv(spec), ['--socket-path=/h/vms/t1/vfs.sock', '-o', 'source=/home/me/p', '-o', 'cache=auto', '-f']);
});

test('the TCG translation cache: 256 MiB by default on QEMU >= 10 and QEMU\'s own size before, sized by the spec or COVE_TCG_TB_MIB, absent under KVM', () => {
  const tcg = (extra: Partial<OldSpec>) => after(buildQemuArgv({ ...base, accel: 'tcg', mount: null, ...extra }), '-accel')[0];
  assert.equal(tcg({ tcgCacheMiB: 128 }), 'tcg,thread=single,tb-size=128');
  assert.equal(tcg({ tcgCacheMiB: null }), 'tcg,thread=single');
  assert.deepEqual(after(buildQemuArgv({ ...base, accel: 'kvm', mount: null, tcgCacheMiB: 128 }), '-accel'), ['kvm']);
  assert.equal(tcgCacheMiB({}), DEFAULT_TCG_CACHE_MIB);
  assert.equal(DEFAULT_TCG_CACHE_MIB, null);
  // QEMU 10 and later get the bound by default; before 10, QEMU's own size (its flushes crashed guests).
  assert.equal(tcgCacheMiB({}, 'QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18+b3)'), null);
  assert.equal(tcgCacheMiB({}, 'QEMU emulator version 9.2.0'), null);
  assert.equal(tcgCacheMiB({}, 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)'), BOUNDED_TCG_CACHE_MIB);
  assert.equal(BOUNDED_TCG_CACHE_MIB, 256);
  assert.equal(tcgCacheMiB({ COVE_TCG_TB_MIB: '0' }, 'QEMU emulator version 10.0.2'), null);
  assert.equal(tcgCacheMiB({}, 'unknown'), null);
  assert.equal(tcgCacheMiB({ COVE_TCG_TB_MIB: '256' }), 256);
  assert.equal(tcgCacheMiB({ COVE_TCG_TB_MIB: '0' }), null);
  for (const bad of ['4', '5000', '64.5', 'big']) assert.throws(() => tcgCacheMiB({ COVE_TCG_TB_MIB: bad }), /COVE_TCG_TB_MIB/);
});

test("cove doctor on the translation cache: QEMU's own size is fine; a bound on QEMU before 10 is flagged with what to do", () => {
  const v72 = 'QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18+b3)';
  assert.deepEqual(tcgCacheCheck(v72, {}).ok, true);
  const bounded = tcgCacheCheck(v72, { COVE_TCG_TB_MIB: '128' });
  assert.equal(bounded.ok, false);
  assert.match(bounded.detail, /COVE_TCG_TB_MIB=128 with QEMU 7\.2/);
  assert.match(bounded.hint ?? '', /unset COVE_TCG_TB_MIB/);
  const v10 = 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)';
  assert.deepEqual(tcgCacheCheck(v10, { COVE_TCG_TB_MIB: '128' }), { ok: true, detail: '128 MiB per sandbox (COVE_TCG_TB_MIB)' });
  assert.deepEqual(tcgCacheCheck(v10, {}), { ok: true, detail: '256 MiB per sandbox (the default on QEMU >= 10)' });
  assert.match(tcgCacheCheck(v72, {}).detail, /on QEMU >= 10 it is bounded to 256 MiB/);
  const bad = tcgCacheCheck(v72, { COVE_TCG_TB_MIB: 'big' });
  assert.equal(bad.ok, false);
  assert.match(bad.detail, /COVE_TCG_TB_MIB=big is not a translation cache size/);
});

test('guest address randomization: off only under TCG on QEMU before 8.0 (no position-independent translation), COVE_GUEST_ASLR overrides', () => {
  const v72 = 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)';
  const v80 = 'QEMU emulator version 8.0.0';
  const v10 = 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)';
  assert.equal(defaultGuestAslr('tcg', v72), false);
  assert.equal(defaultGuestAslr('tcg', 'QEMU emulator version 7.99.1'), false);
  assert.equal(defaultGuestAslr('tcg', v80), true);
  assert.equal(defaultGuestAslr('tcg', v10), true);
  assert.equal(defaultGuestAslr('kvm', v72), true, 'KVM runs guest code natively: nothing to translate');
  assert.equal(defaultGuestAslr('tcg', 'unknown'), true, 'a QEMU we cannot place keeps the kernel default');
  assert.equal(guestAslr('tcg', v72, { COVE_GUEST_ASLR: 'on' }), true);
  assert.equal(guestAslr('kvm', v10, { COVE_GUEST_ASLR: ' OFF ' }), false);
  assert.equal(guestAslr('tcg', v72, { COVE_GUEST_ASLR: '' }), false);
  for (const bad of ['1', 'yes', 'randomize']) assert.throws(() => guestAslr('tcg', v72, { COVE_GUEST_ASLR: bad }), /COVE_GUEST_ASLR=.* is not a setting/);
  assert.equal(guestAslrSetting({}), null);
  assert.equal(guestAslrSetting({ COVE_GUEST_ASLR: 'On' }), true);
  assert.throws(() => guestAslrSetting({ COVE_GUEST_ASLR: '2' }), /not a setting/);
  const off = guestAslrCheck('tcg', v72, {});
  assert.equal(off.ok, true);
  assert.match(off.detail, /^off \(the default under TCG on QEMU before 8\.0.*COVE_GUEST_ASLR=on in coved's environment keeps it/);
  assert.match(guestAslrCheck('tcg', v72, { COVE_GUEST_ASLR: 'on' }).detail, /^on \(COVE_GUEST_ASLR\)/);
  assert.match(guestAslrCheck('kvm', v72, {}).detail, /^on: /);
  const bad = guestAslrCheck('tcg', v72, { COVE_GUEST_ASLR: 'maybe' });
  assert.equal(bad.ok, false);
  assert.match(bad.hint ?? '', /set it to on .* or off/);
});

test('the balloon: free-page reporting when the VM owns its RAM; refused over a template RAM file mapped copy-on-write', () => {
  const devices = (extra: Partial<LayoutSpec>) => after(argvOf(specFromLayout({ ...base, accel: 'tcg', share: null, ...extra })), '-device');
  assert.ok(devices({ balloon: true }).includes('virtio-balloon-device,free-page-reporting=on'));
  assert.ok(!devices({}).some((d) => d.startsWith('virtio-balloon')));
  assert.ok(devices({ balloon: true, share: { type: 'virtiofs', hostPath: '/p', readonly: false } }).includes('virtio-balloon-device,free-page-reporting=on'));
  assert.throws(() => devices({ balloon: true, memoryFile: { path: '/h/t/ram', shared: false } }), /punch holes/);
});

test('the forwarding NIC: a second virtio-net on slirp that lets the guest send nothing, after the primary one; hostfwd only to its address', () => {
  const argv = (extra: Partial<LayoutSpec>) => argvOf(specFromLayout({ ...base, network: 'passt', accel: 'tcg', share: null, ...extra }));
  const withNic = argv({ forwardNic: true });
  assert.deepEqual(after(withNic, '-netdev'), ['stream,id=net0,server=off,addr.type=unix,addr.path=/h/vms/t1/net.sock', 'user,id=fwd,restrict=on,ipv6=off,net=10.0.3.0/24,host=10.0.3.2']);
  // The primary NIC first, so the guest still names it eth0.
  assert.deepEqual(after(withNic, '-device').filter((d) => d.startsWith('virtio-net')), ['virtio-net-device,netdev=net0', 'virtio-net-device,netdev=fwd,mac=52:54:00:c0:fe:02']);
  assert.deepEqual(after(argv({}), '-netdev'), ['stream,id=net0,server=off,addr.type=unix,addr.path=/h/vms/t1/net.sock']);
  assert.equal(hostfwdCommand('add', 41000, 8080), 'hostfwd_add fwd tcp:127.0.0.1:41000-10.0.3.15:8080');
  assert.equal(hostfwdCommand('remove', 41000), 'hostfwd_remove fwd tcp:127.0.0.1:41000');
  for (const bad of [0, 65536, 1.5, NaN]) assert.throws(() => hostfwdCommand('add', 41000, bad), /not a TCP port/);
});

test('the stdin port: a third virtio-serial port on stdin.sock, after the agent and data ports, only when the spec asks', () => {
  const argv = (extra: Partial<LayoutSpec>) => argvOf(specFromLayout({ ...base, accel: 'tcg', share: null, dataPort: true, ...extra }));
  const ports = (a: string[]) => after(a, '-device').filter((d) => d.startsWith('virtserialport'));
  assert.deepEqual(ports(argv({ stdinPort: true })), ['virtserialport,chardev=agent,name=cove.agent', 'virtserialport,chardev=data,name=cove.data', 'virtserialport,chardev=stdin,name=cove.stdin']);
  assert.ok(after(argv({ stdinPort: true }), '-chardev').includes('socket,id=stdin,path=/h/vms/t1/stdin.sock,server=on,wait=off'));
  assert.deepEqual(ports(argv({})), ['virtserialport,chardev=agent,name=cove.agent', 'virtserialport,chardev=data,name=cove.data']);
});

test('no mount: neither 9p nor virtio-fs devices', () => {
  const argv = buildQemuArgv({ ...base, accel: 'tcg', mount: null });
  assert.ok(!argv.some((a) => /9p|vhost-user-fs|memory-backend/.test(a)));
});

test('kernel command line and host TSC', () => {
  assert.equal(kernelCmdline({ accel: 'tcg', tscKhz: null }), 'console=ttyS0 reboot=k panic=-1 oops=panic quiet loglevel=4 tsc=reliable');
  assert.equal(hostTscKhz('processor\t: 0\ncpu MHz\t\t: 2445.428\n'), 2445428);
  assert.equal(hostTscKhz('nothing'), null);
});

test('template and clone: guest RAM in a file, shared for the template, private for a clone; restore waits for its state', () => {
  const share = { type: '9p' as const, hostPath: '/home/me/p', readonly: false };
  const tpl = argvOf(specFromLayout({ ...base, accel: 'tcg', share, memoryFile: { path: '/h/t/ram', shared: true } }));
  assert.deepEqual(after(tpl, '-M'), ['microvm,pit=on,pic=on,rtc=on,memory-backend=mem']);
  assert.deepEqual(after(tpl, '-object'), ['memory-backend-file,id=mem,size=1024M,mem-path=/h/t/ram,share=on']);
  assert.ok(!tpl.includes('-incoming'));
  const clone = argvOf(specFromLayout({ ...base, vmDir: '/h/vms/c1', accel: 'tcg', share, memoryFile: { path: '/h/t/ram', shared: false } }), { incoming: true });
  assert.deepEqual(after(clone, '-object'), ['memory-backend-file,id=mem,size=1024M,mem-path=/h/t/ram,share=off']);
  assert.deepEqual(after(clone, '-incoming'), ['defer']);
  // The device order is what a restore depends on: only paths differ between template and clone.
  const shape = (argv: string[]) => argv.filter((a) => !a.startsWith('/')).map((a) => a.replace(/\/h\/(vms\/\w+|t)\//g, '<dir>/').replace(/share=(on|off)/, 'share=?'));
  assert.deepEqual(shape(clone).filter((a) => a !== '-incoming' && a !== 'defer'), shape(tpl));
  assert.throws(() => argvOf(specFromLayout({ ...base, accel: 'tcg', share: { ...share, type: 'virtiofs' }, memoryFile: { path: '/h/t/ram', shared: false } })), /virtio-fs needs guest RAM/);
});

test('a comma in a path is doubled for QEMU', () => {
  const argv = argvOf(specFromLayout({ ...base, accel: 'tcg', share: { type: '9p', hostPath: '/home/me/a,b', readonly: false } }));
  assert.deepEqual(after(argv, '-fsdev'), ['local,id=ws,path=/home/me/a,,b,security_model=none']);
});
