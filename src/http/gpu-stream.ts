/**
 * What the GPU pass-through needs to know about a forwarded response while the bytes go by,
 * without buffering them: where the last SSE event ended, which event it was, and how this
 * endpoint's stream says "finished" and "failed".
 *
 * Each streaming endpoint ends its stream its own way (what the app itself sends):
 *   chat, completions  data: [DONE]                     failure: data: {"error": {…}}
 *   native /v1/generate  event: done                    failure: event: error, data: {"error": {…}}
 *   responses          event: response.completed | response.incomplete | response.failed
 *                                                      failure: event: error, data: {type: "error",
 *                                                      sequence_number, code, message, param}
 * A GPU stream that ends without one of these was cut short (its server died at an event boundary,
 * a proxy closed it): the pass-through then appends this wire's failure event, so the client
 * sees an error instead of a short answer that looks complete.
 */
import type { BitNetError } from '../errors.ts';
import { errorBody } from './errors.ts';
import { sseData, sseEvent } from './sse.ts';

export type StreamWire = 'openai' | 'native' | 'responses';

/** Keeps this much of each line: enough for an event name and a data line's leading fields. */
const HEAD = 256;

/** Tracks SSE framing over chunks: the last complete event's name and data head, and boundaries. */
export class SseTail {
  private readonly dec = new TextDecoder();
  private line = '';
  private lineLen = 0;
  private curEvent: string | undefined;
  private curData: string | undefined;
  private lastTwo = '';
  /** The last complete event: its `event:` name ("message" without one) and its data line's head. */
  lastEvent: string | undefined;
  lastData: string | undefined;
  /** The highest `sequence_number` seen (responses streams). */
  seq: number | undefined;

  feed(chunk: Uint8Array): void {
    const text = this.dec.decode(chunk, { stream: true });
    if (text.length === 0) return;
    this.lastTwo = (this.lastTwo + text.slice(-2)).slice(-2);
    let i = 0;
    for (;;) {
      const nl = text.indexOf('\n', i);
      const part = nl < 0 ? text.slice(i) : text.slice(i, nl);
      if (this.line.length < HEAD) this.line += part.slice(0, HEAD - this.line.length);
      this.lineLen += part.length;
      if (nl < 0) return;
      this.endLine();
      i = nl + 1;
    }
  }

  /** Whether the bytes so far end at an event boundary (a blank line), where an event may be added. */
  get atBoundary(): boolean {
    return this.lastTwo === '\n\n';
  }

  private endLine(): void {
    const line = this.line.endsWith('\r') ? this.line.slice(0, -1) : this.line;
    const blank = this.lineLen === 0 || (this.lineLen === 1 && line === '');
    this.line = '';
    this.lineLen = 0;
    if (blank) {
      if (this.curData !== undefined) {
        this.lastEvent = this.curEvent ?? 'message';
        this.lastData = this.curData;
        const m = /"sequence_number":(\d+)/.exec(this.curData);
        if (m) this.seq = Math.max(this.seq ?? 0, Number(m[1]));
      }
      this.curEvent = undefined;
      this.curData = undefined;
      return;
    }
    if (line.startsWith('event:')) this.curEvent = line.slice(6).trim();
    else if (line.startsWith('data:') && this.curData === undefined) this.curData = line.slice(5).trimStart();
  }
}

/** Whether the stream's last event is this wire's proper end (or its own failure event). */
export function streamFinished(wire: StreamWire, t: SseTail): boolean {
  switch (wire) {
    case 'openai':
      return t.lastData === '[DONE]' || (t.lastData?.startsWith('{"error"') ?? false);
    case 'native':
      return t.lastEvent === 'done' || t.lastEvent === 'error';
    case 'responses':
      return (
        t.lastEvent === 'response.completed' ||
        t.lastEvent === 'response.incomplete' ||
        t.lastEvent === 'response.failed' ||
        t.lastEvent === 'error'
      );
  }
}

/** This wire's in-band failure event (written at an event boundary). */
export function failureEvent(wire: StreamWire, err: BitNetError, t: SseTail): string {
  switch (wire) {
    case 'openai':
      return sseData(errorBody(err));
    case 'native':
      return sseEvent('error', errorBody(err));
    case 'responses':
      return sseEvent('error', {
        type: 'error',
        sequence_number: t.seq === undefined ? 0 : t.seq + 1,
        code: err.code,
        message: err.message,
        param: null,
      });
  }
}
