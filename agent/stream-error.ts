// How the data channel's service refuses a stream: a status and a one-line reason, then END_STREAM.
import * as http2 from 'node:http2';
import { refusalHeaders } from '../contract/data-channel';

export function respondError(stream: http2.ServerHttp2Stream, status: number, message: string): void {
  if (stream.destroyed || stream.headersSent) {
    stream.close(http2.constants.NGHTTP2_CANCEL);
    return;
  }
  stream.respond(refusalHeaders(status, message), { endStream: true });
}
