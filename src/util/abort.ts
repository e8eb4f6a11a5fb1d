/**
 * AbortSignal checks that throw typed errors. `signal.throwIfAborted()` throws the signal's reason,
 * which is a DOMException ("AbortError", or "TimeoutError" from AbortSignal.timeout) unless the
 * aborter gave one; the API reports its own failures as BitNetErrors, so those become
 * Timeout/CANCELLED and Timeout/TIMEOUT (the DOMException kept as the cause). A reason the aborter
 * gave (the HTTP layer's SHUTTING_DOWN, a stream's cancel, a caller's own Error) is thrown as it is.
 */
import { BitNetError, isBitNetError } from '../errors.ts';

/**
 * What an aborted signal's wait throws: the platform's own reasons (a DOMException "AbortError"
 * from abort() without a reason, "TimeoutError" from AbortSignal.timeout) become typed errors;
 * a reason the aborter chose (a BitNetError, any other Error or value) is theirs and is thrown as it is.
 */
export function cancelReason(signal: AbortSignal): unknown {
  const r: unknown = signal.reason;
  if (isBitNetError(r) || !(r instanceof DOMException)) return r;
  if (r.name === 'TimeoutError')
    return BitNetError.Timeout('TIMEOUT', 'the operation timed out (its AbortSignal)', {}, r);
  return BitNetError.Timeout('CANCELLED', 'the operation was cancelled (its AbortSignal)', {}, r);
}

/** Throws cancelReason(signal) when the signal has been aborted. */
export function throwIfCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw cancelReason(signal);
}
