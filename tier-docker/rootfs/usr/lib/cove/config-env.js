// Prints /run/cove/config.json as bash assignments for /sbin/cove-init (one node start at boot
// instead of a JSON parser in bash); cove-init evaluates them through cove_config_load in
// init-lib.sh. A config it cannot use (missing, not JSON, a field of the wrong kind) prints nothing
// and exits 1 with one line on stderr saying why; the init then boots with its defaults and says
// so. The reasons never quote the config: it holds the guest's private host key. The fallbacks
// below repeat contract/guest.ts (GUEST_NETWORK), which this file cannot import in the guest.
'use strict';
const fs = require('fs');

function fail(reason) {
  process.stderr.write(`${reason}\n`);
  process.exit(1);
}

const file = process.argv[2] || '/run/cove/config.json';
let text;
try {
  text = fs.readFileSync(file, 'utf8');
} catch (e) {
  fail(`cannot read ${file} (${e.code || e.message})`);
}
let c;
try {
  c = JSON.parse(text);
} catch (e) {
  const at = /position (\d+)/.exec(e.message);
  fail(`${file} is not JSON${at ? ` (at byte ${at[1]})` : ''}`);
}
if (typeof c !== 'object' || c === null || Array.isArray(c)) fail(`${file} is not a JSON object`);

const str = (v, name) => {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || /[\0\n]/.test(v)) fail(`${name} in ${file} is not a one-line string`);
  return v;
};
const list = (v, name) => {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(`${name} in ${file} is not a list`);
  return v;
};
const net = c.network === undefined || c.network === null ? {} : c.network;
if (typeof net !== 'object' || Array.isArray(net)) fail(`network in ${file} is not an object`);
const mounts = list(c.mounts, 'mounts').map((m, i) => {
  if (typeof m !== 'object' || m === null) fail(`mounts[${i}] in ${file} is not an object`);
  const path = str(m.path, `mounts[${i}].path`);
  if (!path || !path.startsWith('/')) fail(`mounts[${i}].path in ${file} is not an absolute path`);
  return {
    tag: str(m.tag, `mounts[${i}].tag`) || 'cove-ws',
    type: str(m.type, `mounts[${i}].type`) || 'virtiofs',
    path,
    ro: m.readonly === true ? 'ro' : 'rw',
    file: m.file === undefined ? '' : (typeof m.file === 'string' && /^[^/\0\n\r]+$/.test(m.file) && m.file !== '.' && m.file !== '..' ? m.file : fail(`mounts[${i}].file in ${file} is not one plain file name`)),
  };
});
const registries = list(c.insecureRegistries, 'insecureRegistries').map((r, i) => str(r, `insecureRegistries[${i}]`) || fail(`insecureRegistries[${i}] in ${file} is empty`));

if (c.aslr !== undefined && typeof c.aslr !== 'boolean') fail(`aslr in ${file} is not true or false`);

const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
const arr = (xs) => `(${xs.map(q).join(' ')})`;
const out = [
  `COVE_HOSTNAME=${q(str(c.hostname, 'hostname') || str(c.name, 'name') || 'cove')}`,
  `COVE_ADDRESS=${q(str(net.address, 'network.address') || '10.0.2.15/24')}`,
  `COVE_GATEWAY=${q(str(net.gateway, 'network.gateway') || '10.0.2.2')}`,
  `COVE_DNS=${q(str(net.dns, 'network.dns') || '10.0.2.3')}`,
  `COVE_RESIZE_ROOT=${q(c.resizeRoot === false ? 'no' : 'yes')}`,
  `COVE_MOUNT_TAGS=${arr(mounts.map((m) => m.tag))}`,
  `COVE_MOUNT_TYPES=${arr(mounts.map((m) => m.type))}`,
  `COVE_MOUNT_PATHS=${arr(mounts.map((m) => m.path))}`,
  `COVE_MOUNT_RO=${arr(mounts.map((m) => m.ro))}`,
  `COVE_MOUNT_FILES=${arr(mounts.map((m) => m.file))}`,
  `COVE_INSECURE_REGISTRIES=${arr(registries)}`,
  // kernel.randomize_va_space: '' leaves the kernel's default (the config does not say).
  `COVE_ASLR=${q(c.aslr === undefined ? '' : c.aslr ? '2' : '0')}`,
];
process.stdout.write(out.join('\n') + '\n');
