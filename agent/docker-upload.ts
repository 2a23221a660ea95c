// A Docker connection whose request bytes come on the stdin port (PROTOCOL.md, "Docker uploads on
// the stdin port"): for a large request body (`docker load`, a build context, `docker cp` into a
// container) the host asks, on the CONNECT stream to docker.sock, for the stdin port. The agent
// connects to dockerd, answers with the echo, reads the host's preamble off the port and starts
// `cat` with the port as its stdin and the dockerd connection as its stdout: the request bytes go
// from qemu to dockerd with no JavaScript per chunk. dockerd's answer comes back on the stream.
//
// The dockerd connection is never half-closed from here: dockerd takes a client's EOF for a client
// gone and cancels the request in progress. It closes with the stream, after the answer.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { DOCKER_STDIN_PORT_HEADER } from '../contract/data-channel';
import { EXEC_STDIN_PORT_WAIT_MS } from '../contract/exec-stream';
import { errorText, log } from './log';
import { StdinPort } from './stdin-port';
import { answerOnStream, onceConnected } from './stream-answer';

const { HTTP2_HEADER_STATUS, NGHTTP2_CANCEL } = http2.constants;

/**
 * Serves a CONNECT to docker.sock that asked for the stdin port; false when the port cannot be had
 * (no port, a bad nonce, another user holds it), and the caller serves the stream as usual.
 */
export function serveDockerUpload(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  dockerSock: string,
  stdinPort: StdinPort | null,
  systemPath: string,
  what: string,
): boolean {
  const asked = headers[DOCKER_STDIN_PORT_HEADER];
  if (asked === undefined || !stdinPort) return false;
  const port = stdinPort.open(asked, 'stdin');
  if (!port) return false;
  const closePort = (): void => {
    try {
      fs.closeSync(port.fd);
    } catch {
      // Closed already.
    }
  };
  const socket = net.connect({ path: dockerSock, allowHalfOpen: true });
  onceConnected(
    stream,
    socket,
    what,
    () => {
      stream.respond({ [HTTP2_HEADER_STATUS]: 200, [DOCKER_STDIN_PORT_HEADER]: port.nonce });
      stream.resume(); // The host sends the request on the port; this body stays empty.
      void StdinPort.preamble(port, EXEC_STDIN_PORT_WAIT_MS, () => stream.destroyed).then((problem) => {
        if (problem !== null || stream.destroyed) {
          if (problem !== null) log(`data: ${what}: ${problem}`);
          closePort();
          socket.destroy();
          if (!stream.destroyed) stream.close(NGHTTP2_CANCEL);
          return;
        }
        relay(stream, socket, port.fd, systemPath, what);
      });
    },
    closePort,
  );
  return true;
}

/** `cat` copies the port into dockerd; the answer goes back on the stream. */
function relay(stream: http2.ServerHttp2Stream, socket: net.Socket, portFd: number, systemPath: string, what: string): void {
  let cat: ReturnType<typeof spawn>;
  try {
    cat = spawn('cat', [], { stdio: [portFd, socket, 'ignore'], env: { PATH: systemPath } });
  } catch (err) {
    log(`data: ${what}: cannot start cat: ${errorText(err)}`);
    fs.closeSync(portFd);
    socket.destroy();
    stream.close(NGHTTP2_CANCEL);
    return;
  }
  // cat has its own copy: the port closes when cat ends, so that no reader is left on it.
  fs.closeSync(portFd);
  let catDone = false;
  cat.on('error', (err) => {
    // Spawn failures arrive here (ENOENT): the request never reached dockerd.
    log(`data: ${what}: cannot run cat: ${errorText(err)}`);
    catDone = true;
    socket.destroy();
    if (!stream.destroyed) stream.close(NGHTTP2_CANCEL);
  });
  cat.on('exit', (code, signal) => {
    catDone = true;
    // 0: the host closed the port after the request (its connection ended). Anything else with the
    // stream still open means the request was cut: the answer would be a lie.
    if (code !== 0 && !stream.destroyed) {
      log(`data: ${what}: cat ended (${signal ?? `code ${code}`}) with the stream open`);
      socket.destroy();
      stream.close(NGHTTP2_CANCEL);
    }
  });
  answerOnStream(socket, stream);
  stream.on('close', () => {
    socket.destroy();
    if (!catDone) cat.kill('SIGKILL');
  });
  log(`data: ${what}: the request comes on the stdin port`);
}
