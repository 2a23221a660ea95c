// Prints /run/cove/config.json as bash assignments for /sbin/cove-init (one node start at boot
// instead of a JSON parser in bash). Missing or malformed config: defaults, and a console line.
'use strict';
const fs = require('fs');
let c = {};
try {
  c = JSON.parse(fs.readFileSync(process.argv[2] || '/run/cove/config.json', 'utf8'));
} catch (e) {
  process.stderr.write(`cove: config unreadable (${e.message}); using defaults\n`);
}
const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
const arr = (xs) => `(${xs.map(q).join(' ')})`;
const net = c.network || {};
const mounts = Array.isArray(c.mounts) ? c.mounts : [];
const out = [
  `COVE_HOSTNAME=${q(c.hostname || c.name || 'cove')}`,
  `COVE_ADDRESS=${q(net.address || '10.0.2.15/24')}`,
  `COVE_GATEWAY=${q(net.gateway || '10.0.2.2')}`,
  `COVE_DNS=${q(net.dns || '10.0.2.3')}`,
  `COVE_RESIZE_ROOT=${q(c.resizeRoot === false ? 'no' : 'yes')}`,
  `COVE_MOUNT_TAGS=${arr(mounts.map((m) => m.tag || 'cove-ws'))}`,
  `COVE_MOUNT_TYPES=${arr(mounts.map((m) => m.type || 'virtiofs'))}`,
  `COVE_MOUNT_PATHS=${arr(mounts.map((m) => m.path))}`,
  `COVE_MOUNT_RO=${arr(mounts.map((m) => (m.readonly ? 'ro' : 'rw')))}`,
  `COVE_INSECURE_REGISTRIES=${arr(Array.isArray(c.insecureRegistries) ? c.insecureRegistries : [])}`,
];
process.stdout.write(out.join('\n') + '\n');
