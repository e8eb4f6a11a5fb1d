/**
 * Stop sequences matched on decoded text, across token boundaries.
 *
 * Tokens decode to arbitrary text fragments, so a stop string like "\n\nUser:" may arrive as
 * "\n", "\nUs", "er:". The matcher keeps a small buffer of text it has not emitted yet:
 *  - `push(delta)` appends the delta, then
 *    - if any stop string occurs in the buffer, returns the text before the earliest occurrence
 *      with `stopped: true` (the stop string itself is never emitted, nor anything after it).
 *      This happens at the first push after which any stop is complete: a longer stop that
 *      started earlier but is still incomplete does not delay it (its rest is never generated);
 *    - otherwise emits everything except the longest buffer suffix that is a (proper) prefix of
 *      some stop string; that suffix is held back because the next delta may complete a stop.
 *  - `flush()` returns the held-back text once generation ends for another reason.
 *
 * Invariant: the held-back text is shorter than the longest stop string, so a push costs
 * O((held + delta) * stops) for the search plus O(maxStopLen^2 * stops) for the hold-back.
 * After a stop, further pushes emit nothing and stay stopped.
 *
 * Matching is on UTF-16 code units. A held-back suffix always starts where a stop string starts,
 * so a well-formed stop string never splits a surrogate pair between emit and hold.
 */
import { BitNetError } from '../errors.ts';

export interface StopPushResult {
  /** Text safe to show now. */
  emit: string;
  /** True once a stop string has matched; `emit` is then the text before it. */
  stopped: boolean;
}

export class StopMatcher {
  private readonly stops: readonly string[];
  private readonly maxLen: number;
  private held = '';
  private done = false;
  private matchedStop: string | undefined;

  constructor(stops: readonly string[]) {
    if (!Array.isArray(stops)) throw BitNetError.Config('STOP_NOT_ARRAY', 'stop sequences must be an array of strings');
    for (let i = 0; i < stops.length; i++) {
      const s = stops[i];
      if (typeof s !== 'string') {
        throw BitNetError.Config('STOP_NOT_STRING', 'stop sequences must be strings', { index: i, type: typeof s });
      }
      if (s.length === 0) throw BitNetError.Config('STOP_EMPTY', 'stop sequences must not be empty', { index: i });
    }
    this.stops = [...new Set(stops)];
    this.maxLen = this.stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** True once a stop string has matched. */
  get stopped(): boolean {
    return this.done;
  }

  /** The stop string that matched (earliest in the text; the longest if several start there). */
  get matched(): string | undefined {
    return this.matchedStop;
  }

  push(textDelta: string): StopPushResult {
    if (this.done) return { emit: '', stopped: true };
    if (this.stops.length === 0) return { emit: textDelta, stopped: false };
    const buf = this.held + textDelta;

    // Earliest full match wins: nothing after it may be shown.
    let at = -1;
    let which: string | undefined;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i !== -1 && (at === -1 || i < at || (i === at && s.length > which!.length))) {
        at = i;
        which = s;
      }
    }
    if (at !== -1) {
      this.done = true;
      this.matchedStop = which;
      this.held = '';
      return { emit: buf.slice(0, at), stopped: true };
    }

    // No match: hold back the longest suffix that could still grow into a stop string.
    const hold = this.holdLength(buf);
    this.held = buf.slice(buf.length - hold);
    return { emit: buf.slice(0, buf.length - hold), stopped: false };
  }

  /** Returns (and forgets) the held-back text; call when generation ends without a stop. */
  flush(): string {
    const out = this.held;
    this.held = '';
    return out;
  }

  /** Length of the longest suffix of `buf` that is a proper prefix of some stop string. */
  private holdLength(buf: string): number {
    for (let len = Math.min(buf.length, this.maxLen - 1); len > 0; len--) {
      const suffix = buf.slice(buf.length - len);
      for (const s of this.stops) {
        if (s.length > len && s.startsWith(suffix)) return len;
      }
    }
    return 0;
  }
}
