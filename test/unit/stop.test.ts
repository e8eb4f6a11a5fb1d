import { describe, expect, it } from 'vitest';
import { isBitNetError } from '../../src/errors.ts';
import { StopMatcher } from '../../src/generate/stop.ts';

/** Feeds deltas; returns all emitted text, whether it stopped, and the emits one by one. */
function run(stops: string[], deltas: string[]): { text: string; stopped: boolean; emits: string[] } {
  const m = new StopMatcher(stops);
  const emits: string[] = [];
  let stopped = false;
  for (const d of deltas) {
    const r = m.push(d);
    emits.push(r.emit);
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  let text = emits.join('');
  if (!stopped) text += m.flush();
  return { text, stopped, emits };
}

/**
 * Reference: generation stops at the first delta after which some stop string occurs in the text
 * so far; the output is that text cut at the earliest occurrence. (A longer stop that started
 * earlier but has not completed yet cannot win: the text after the stop is never generated.)
 */
function reference(stops: string[], deltas: string[]): { text: string; stopped: boolean } {
  let so = '';
  for (const d of deltas) {
    so += d;
    let at = -1;
    for (const s of stops) {
      const i = so.indexOf(s);
      if (i !== -1 && (at === -1 || i < at)) at = i;
    }
    if (at !== -1) return { text: so.slice(0, at), stopped: true };
  }
  return { text: so, stopped: false };
}

describe('StopMatcher', () => {
  it('matches a stop sequence split across many deltas and holds back its prefix', () => {
    const m = new StopMatcher(['</s>']);
    expect(m.push('Hello <')).toEqual({ emit: 'Hello ', stopped: false });
    expect(m.push('/')).toEqual({ emit: '', stopped: false });
    expect(m.push('s')).toEqual({ emit: '', stopped: false });
    expect(m.push('> trailing')).toEqual({ emit: '', stopped: true });
    expect(m.stopped).toBe(true);
    expect(m.matched).toBe('</s>');
    expect(m.push('more')).toEqual({ emit: '', stopped: true });
    expect(m.flush()).toBe('');
  });

  it('releases held text when the candidate turns out not to match', () => {
    const m = new StopMatcher(['</s>']);
    expect(m.push('a</')).toEqual({ emit: 'a', stopped: false });
    expect(m.push('b')).toEqual({ emit: '</b', stopped: false });
    expect(m.push('<')).toEqual({ emit: '', stopped: false });
    expect(m.flush()).toBe('<');
  });

  it('handles overlapping candidates (self-overlapping stop string)', () => {
    // "aab" inside "aaab": the first candidate "aa" fails at the third 'a', but "aa" shifted by one matches.
    expect(run(['aab'], ['a', 'a', 'a', 'b', 'c'])).toMatchObject({ text: 'a', stopped: true });
    const m = new StopMatcher(['abab']);
    expect(m.push('xab')).toEqual({ emit: 'x', stopped: false });
    expect(m.push('a')).toEqual({ emit: '', stopped: false }); // "aba" still a prefix
    expect(m.push('c')).toEqual({ emit: 'abac', stopped: false });
  });

  it('with several stops, stops at the earliest occurrence in the text', () => {
    expect(run(['END', 'STOP'], ['xx S', 'TO', 'P yy END'])).toMatchObject({ text: 'xx ', stopped: true });
    expect(run(['END', 'STOP'], ['xx E', 'ND STOP'])).toMatchObject({ text: 'xx ', stopped: true });
    // A short stop completing inside a longer candidate stops at once (later text is never generated).
    expect(run(['b', '/b/'], ['a/', 'b', '/'])).toMatchObject({ text: 'a/', stopped: true });
    expect(run(['b', '/b/'], ['a/b/'])).toMatchObject({ text: 'a', stopped: true });
    // One stop is a prefix of another: the shorter one completes first in the same place.
    const m = new StopMatcher(['\n\nUser:', '\n\n']);
    expect(m.push('hi\n')).toEqual({ emit: 'hi', stopped: false });
    expect(m.push('\nU')).toEqual({ emit: '', stopped: true });
    expect(m.matched).toBe('\n\n');
  });

  it('holds back a suffix that is a prefix of a longer stop even when a shorter one does not apply', () => {
    const m = new StopMatcher(['xyz', '###']);
    expect(m.push('a#')).toEqual({ emit: 'a', stopped: false });
    expect(m.push('#xy')).toEqual({ emit: '##', stopped: false });
    expect(m.push('!')).toEqual({ emit: 'xy!', stopped: false });
  });

  it('passes text through when there are no stops', () => {
    expect(run([], ['a', 'b'])).toEqual({ text: 'ab', stopped: false, emits: ['a', 'b'] });
  });

  it('agrees with the stop-at-first-completion reference over random texts and random splits', () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const alphabet = 'ab\n<>/';
    const word = (min: number, max: number): string => {
      let s = '';
      const n = min + rnd(max - min + 1);
      for (let i = 0; i < n; i++) s += alphabet[rnd(alphabet.length)];
      return s;
    };
    for (let t = 0; t < 3000; t++) {
      const stops = Array.from({ length: 1 + rnd(3) }, () => word(1, 4));
      const full = word(0, 30);
      const deltas: string[] = [];
      for (let i = 0; i < full.length; ) {
        const n = rnd(4); // empty deltas included
        deltas.push(full.slice(i, i + n));
        i += n;
      }
      const got = run(stops, deltas);
      const want = reference(stops, deltas);
      expect({ text: got.text, stopped: got.stopped }, JSON.stringify({ stops, deltas })).toEqual(want);
      // Nothing emitted before the stop can be retracted: every emit is a prefix step of the final text.
      expect(want.text.startsWith(got.emits.join(''))).toBe(true);
    }
  });

  it('rejects empty and non-string stop sequences with Config errors', () => {
    for (const [stops, code] of [
      [[''], 'STOP_EMPTY'],
      [['ok', ''], 'STOP_EMPTY'],
      [[1], 'STOP_NOT_STRING'],
    ] as const) {
      try {
        new StopMatcher(stops as unknown as string[]);
        expect.unreachable();
      } catch (e) {
        expect(isBitNetError(e) && e.kind === 'Config' && e.code === code).toBe(true);
      }
    }
  });
});
