// The guest-side half every data-channel stream to a socket shares: the socket's bytes are the
// stream's answer (mux.ts bridges both directions; docker-upload.ts only this one, its requests
// coming on the stdin port).
import * as http2 from 'node:http2';
import type * as net from 'node:net';

const { NGHTTP2_CANCEL } = http2.constants;

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
