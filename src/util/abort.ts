/**
 * AbortSignal checks that throw typed errors. `signal.throwIfAborted()` throws the signal's reason,
 * which is a DOMException ("AbortError", or "TimeoutError" from AbortSignal.timeout) unless the
 * aborter gave one; every failure the API reports is a BitNetError, so those become
 * Timeout/CANCELLED and Timeout/TIMEOUT (the DOMException kept as the cause). A BitNetError reason
 * (the HTTP layer's SHUTTING_DOWN, a stream's cancel) is thrown as it is.
 */
import { BitNetError, isBitNetError } from '../errors.ts';

/** The typed error for an aborted signal's reason. */
export function abortError(signal: AbortSignal): BitNetError {
  const r: unknown = signal.reason;
  if (isBitNetError(r)) return r;
  if (r instanceof Error && r.name === 'TimeoutError')
    return BitNetError.Timeout('TIMEOUT', 'the operation timed out (its AbortSignal)', {}, r);
  return BitNetError.Timeout('CANCELLED', 'the operation was cancelled (its AbortSignal)', {}, r);
}

/** Throws abortError(signal) when the signal has been aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}
