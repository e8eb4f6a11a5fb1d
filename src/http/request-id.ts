/**
 * The x-request-id every response carries (OpenAI's request id, the SDK's `_request_id`): the
 * client's own when it sent a sane one, else a new `req_…`. A request forwarded to the GPU carries
 * the same id, so the edge's and the GPU's logs match.
 */

/** The response's x-request-id: the request's, if it is 1-128 visible ASCII characters, else a new `req_…`. */
export function requestIdOf(given: string | null | undefined): string {
  if (typeof given === 'string' && /^[\x21-\x7e]{1,128}$/.test(given)) return given;
  return `req_${crypto.randomUUID().replace(/-/g, '')}`;
}
