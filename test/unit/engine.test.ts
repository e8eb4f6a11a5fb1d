// The engine loop against a scripted backend: end-of-generation, stops, limits, abort, cache release.
import { describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { Engine, type GenerationOutcome, type TokenEvent } from '../../src/generate/engine.ts';
import type { Backend, ForwardRequest } from '../../src/kernels/backend.ts';
import { KVCache } from '../../src/model/kv-cache.ts';
import { createByteLevelBpeTokenizer } from '../../src/tokenizer/bpe.ts';
import { makeSyntheticVocab } from '../../src/tokenizer/synthetic-vocab.ts';

const vocab = makeSyntheticVocab(300);
const tokenizer = createByteLevelBpeTokenizer({
  tokens: vocab.tokens,
  merges: vocab.merges,
  tokenTypes: vocab.tokenTypes,
  special: { bosTokenId: vocab.bosId, eosTokenId: vocab.eosId, eotTokenId: vocab.eotId },
});
const byteId = (ch: string) => tokenizer.encode(ch)[0];

/** A backend that always makes `script[step]` the most likely next token. */
function scripted(script: number[]): Backend & { calls: ForwardRequest[] } {
  const calls: ForwardRequest[] = [];
  return {
    name: 'scripted',
    vocabSize: 300,
    calls,
    async forward(req) {
      calls.push(req);
      const step = req.startPos === 0 ? 0 : calls.length - 1;
      const l = new Float32Array(300);
      l[script[Math.min(step, script.length - 1)]] = 10;
      return [l];
    },
  };
}

function engineFor(backend: Backend) {
  const cache = new KVCache({}, { nLayers: 1, nKvHeads: 1, headDim: 2 });
  let n = 0;
  const released: string[] = [];
  const engine = new Engine({
    backend,
    tokenizer,
    contextLength: 64,
    newSequence: () => {
      const id = `s${++n}`;
      return { store: cache.forSequence(id), release: () => released.push(id) };
    },
  });
  return { engine, released };
}

async function drain(
  g: AsyncGenerator<TokenEvent, GenerationOutcome>,
): Promise<{ events: TokenEvent[]; out: GenerationOutcome }> {
  const events: TokenEvent[] = [];
  let r = await g.next();
  while (!r.done) {
    events.push(r.value);
    r = await g.next();
  }
  return { events, out: r.value };
}

const greedy = {
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  stopSequences: [] as string[],
  skipSpecialTokens: true,
  seed: 1,
};

describe('engine loop', () => {
  it('stops on an end-of-generation token without emitting it', async () => {
    const b = scripted([byteId('h'), byteId('i'), vocab.eotId, byteId('x')]);
    const { engine, released } = engineFor(b);
    const { out } = await drain(engine.generate([1, 2], { ...greedy, maxNewTokens: 10 }));
    expect(out.text).toBe('hi');
    expect(out.finishReason).toBe('stop');
    expect(out.tokenIds).toHaveLength(2);
    expect(released).toEqual(['s1']);
    // one prefill of the prompt, then one decode step per emitted token
    expect(b.calls.map((c) => [c.startPos, c.tokens.length])).toEqual([
      [0, 2],
      [2, 1],
      [3, 1],
    ]);
  });

  it('stops at maxNewTokens with finish reason length', async () => {
    const { engine } = engineFor(scripted([byteId('a')]));
    const { out } = await drain(engine.generate([1], { ...greedy, maxNewTokens: 5 }));
    expect(out).toMatchObject({ text: 'aaaaa', finishReason: 'length', generatedTokens: 5, promptTokens: 1 });
  });

  it('matches stop sequences across tokens and holds back partial matches', async () => {
    const seq = [...'say END now'].map(byteId);
    const { engine } = engineFor(scripted(seq));
    const { events, out } = await drain(engine.generate([1], { ...greedy, maxNewTokens: 20, stopSequences: ['END'] }));
    expect(out.text).toBe('say ');
    expect(out.finishReason).toBe('stop');
    expect(events.map((e) => e.text).join('')).toBe('say ');
  });

  it('never emits broken UTF-8 across tokens', async () => {
    const bytes = [...new TextEncoder().encode('é😀')];
    const { engine } = engineFor(scripted([...bytes, vocab.eosId]));
    const { events, out } = await drain(engine.generate([1], { ...greedy, maxNewTokens: 10 }));
    expect(out.text).toBe('é😀');
    for (const e of events) expect(e.text).not.toContain('\uFFFD');
  });

  it('aborts on signal and releases the sequence', async () => {
    const ac = new AbortController();
    const { engine, released } = engineFor(scripted([byteId('a')]));
    const g = engine.generate([1], { ...greedy, maxNewTokens: 50, signal: ac.signal });
    await g.next();
    ac.abort(new Error('client went away'));
    await expect(g.next()).rejects.toThrow('client went away');
    expect(released).toEqual(['s1']);
  });

  it('rejects bad prompts before any work: generate() throws when called, not on the first next()', () => {
    const b = scripted([1]);
    const { engine } = engineFor(b);
    expect(() => engine.generate([], { ...greedy, maxNewTokens: 1 })).toThrow(BitNetError);
    expect(() => engine.generate([999], { ...greedy, maxNewTokens: 1 })).toThrow(/outside the vocabulary/);
    expect(() => engine.generate(new Array(80).fill(1), { ...greedy, maxNewTokens: 1 })).toThrow(/context holds 64/);
    expect(b.calls).toHaveLength(0);
  });
});
