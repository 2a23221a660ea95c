// How the data channel's service refuses a stream: a status and a one-line reason, then END_STREAM.
import * as http2 from 'node:http2';

const { HTTP2_HEADER_STATUS, NGHTTP2_CANCEL } = http2.constants;

/** The header that carries why a CONNECT failed, for the host's log and its client's error. */
export const DATA_ERROR_HEADER = 'cove-error';

export function respondError(stream: http2.ServerHttp2Stream, status: number, message: string): void {
  if (stream.destroyed || stream.headersSent) {
    stream.close(NGHTTP2_CANCEL);
    return;
  }
  // Header values are one line of visible ASCII.
  stream.respond({ [HTTP2_HEADER_STATUS]: status, [DATA_ERROR_HEADER]: message.replace(/[^\x20-\x7e]/g, '?').slice(0, 500) }, { endStream: true });
}
