/**
 * What Node's HTTP server answers before a request exists (its parser's errors, and a request that
 * takes longer than `requestTimeout` to arrive), in the app's error format: the OpenAI-style JSON
 * body with a code (src/http/errors.ts), where Node's default writes a bare status line ("408
 * Request Timeout" and no body).
 *
 * Node gives the 'clientError' listener only the socket, so the response is raw HTTP/1.1 on it.
 * As Node's own handler does, it writes only when nothing has been written on the connection yet
 * (a response already under way is left alone), and then closes the connection.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { BitNetError } from '../errors.ts';
import { errorBody, statusOf } from '../http/errors.ts';

/** The typed error for a Node client error code (the same statuses Node's default handler uses). */
export function clientErrorOf(code: string | undefined): BitNetError {
  switch (code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return BitNetError.Config(
        'REQUEST_TIMEOUT',
        "the request (headers and body) did not arrive within the server's limit (--request-timeout)",
      );
    case 'HPE_HEADER_OVERFLOW':
      return BitNetError.Config('HEADERS_TOO_LARGE', "the request's headers are too large");
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return BitNetError.Config('PAYLOAD_TOO_LARGE', "the request's chunk extensions are too large");
    default:
      return BitNetError.Config('MALFORMED_HTTP', `malformed HTTP request${code ? ` (${code})` : ''}`);
  }
}

/** The 'clientError' listener: the JSON error response if nothing was written yet, then close. */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  const s = socket as Duplex & { bytesWritten?: number };
  if (err.code !== 'ECONNRESET' && s.writable && (s.bytesWritten ?? 0) === 0) {
    const e = clientErrorOf(err.code);
    const status = statusOf(e);
    const body = JSON.stringify(errorBody(e));
    s.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
        'Content-Type: application/json; charset=utf-8\r\n' +
        `Content-Length: ${new TextEncoder().encode(body).length}\r\n` +
        'Connection: close\r\n\r\n' +
        body,
    );
  }
  s.destroy(err);
}
