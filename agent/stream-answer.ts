// What every data-channel stream to a socket shares in the guest: connecting the socket for the
// stream, and the socket's bytes as the stream's answer (mux.ts bridges both directions;
// docker-upload.ts only this one, its requests coming on the stdin port).
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import { errorText, log } from './log';
import { respondError } from './stream-error';

const { NGHTTP2_CANCEL } = http2.constants;

/**
 * Calls `connected` once `socket` (connecting for `stream`) has connected. A connect error answers
 * the stream 502 with the reason; a stream that closes first gives the socket up. `abandon` runs
 * whenever the socket is given up before `connected`.
 */
export function onceConnected(stream: http2.ServerHttp2Stream, socket: net.Socket, what: string, connected: () => void, abandon: () => void = () => undefined): void {
  const onError = (err: Error): void => {
    log(`data: cannot open ${what}: ${errorText(err)}`);
    respondError(stream, 502, errorText(err));
    socket.destroy();
    abandon();
  };
  socket.once('error', onError);
  stream.once('close', () => {
    if (socket.connecting) {
      socket.destroy(); // The host gave up before the connect finished.
      abandon();
    }
  });
  socket.once('connect', () => {
    socket.off('error', onError);
    if (stream.destroyed) {
      socket.destroy();
      abandon();
      return;
    }
    connected();
  });
}

/** The socket's bytes become the stream's answer body, its EOF the stream's END_STREAM; an error on either side ends both. */
export function answerOnStream(socket: net.Socket, stream: http2.Http2Stream): void {
  socket.pipe(stream, { end: false });
  socket.on('end', () => stream.end());
  socket.on('error', () => {
    if (!stream.destroyed) stream.close(NGHTTP2_CANCEL);
    socket.destroy();
  });
  stream.on('error', () => socket.destroy());
}
