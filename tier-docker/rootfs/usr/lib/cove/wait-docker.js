// Waits (bounded) until dockerd answers GET /_ping on /var/run/docker.sock, then prints the
// `cove: ready` console marker. Exit 1 after the deadline, naming what was awaited.
'use strict';
const http = require('http');
const deadlineSec = Number(process.argv[2] || 300);
const start = Date.now();
const uptime = () => require('fs').readFileSync('/proc/uptime', 'utf8').split(' ')[0];
function ping() {
  let done = false;
  const again = () => {
    if (done) return;
    done = true;
    retry();
  };
  const req = http.get({ socketPath: '/var/run/docker.sock', path: '/_ping', timeout: 10000 }, (res) => {
    res.resume();
    if (res.statusCode === 200) {
      console.log(`cove: ready t=${uptime()}s`);
      process.exit(0);
    }
    again();
  });
  req.on('error', again);
  req.on('timeout', () => req.destroy());
}
function retry() {
  if (Date.now() - start > deadlineSec * 1000) {
    console.log(`cove: dockerd did not answer /_ping on /var/run/docker.sock within ${deadlineSec}s`);
    process.exit(1);
  }
  setTimeout(ping, 250);
}
ping();
