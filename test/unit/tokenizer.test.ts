import { describe, expect, it } from 'vitest';
import { isBitNetError } from '../../src/errors.ts';
import type { GGUFEntry, GGUFMetadata } from '../../src/gguf/metadata.ts';
import {
  BYTE_TO_UNICODE,
  bpeMerge,
  buildMergeRanks,
  byteLevelToBytes,
  createByteLevelBpeTokenizer,
  createTokenizerFromGGUF,
  getPreTokenizer,
  makeSyntheticVocab,
  syntheticVocabMetadata,
  type Tokenizer,
  TokenType,
  textToByteLevel,
} from '../../src/tokenizer/index.ts';
import { prng } from '../tokenizer/corpus.ts';

// -- helpers ---------------------------------------------------------------------------------------------

/** A random valid (surrogate-free) string mixing ASCII, whitespace, Latin-1, BMP and astral code points. */
function randomText(rand: () => number): string {
  const len = Math.floor(rand() * 40);
  let s = '';
  for (let i = 0; i < len; i++) {
    const k = rand();
    let cp: number;
    if (k < 0.45) cp = 0x20 + Math.floor(rand() * 95);
    else if (k < 0.55) cp = [0x09, 0x0a, 0x0d, 0x20, 0x85, 0xa0, 0x3000, 0x2028][Math.floor(rand() * 8)];
    else if (k < 0.65) cp = 0x80 + Math.floor(rand() * 0x180);
    else if (k < 0.85) {
      cp = 0x370 + Math.floor(rand() * (0xffff - 0x370));
      if (cp >= 0xd800 && cp <= 0xdfff) cp -= 0x800;
    } else cp = 0x10000 + Math.floor(rand() * 0xfffff);
    s += String.fromCodePoint(cp);
  }
  return s;
}

function expectTokError(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (e) {
    expect(isBitNetError(e)).toBe(true);
    if (isBitNetError(e)) {
      expect(e.kind).toBe('Tokenization');
      expect(e.code).toBe(code);
    }
    return;
  }
  throw new Error(`expected BitNetError ${code}`);
}

const vocab = makeSyntheticVocab(8192);
const meta = syntheticVocabMetadata(vocab);
const tokDefault = createTokenizerFromGGUF(meta);
const tokLlama3 = createTokenizerFromGGUF(meta, { preTokenizer: 'llama-bpe' });
const both: [string, Tokenizer][] = [
  ['default', tokDefault],
  ['llama-bpe', tokLlama3],
];

/** Copy of the synthetic metadata with some keys replaced (undefined value = delete). */
function withMeta(changes: Record<string, GGUFEntry | undefined>): GGUFMetadata {
  const m: GGUFMetadata = new Map(meta);
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) m.delete(k);
    else m.set(k, v);
  }
  return m;
}

const CORPUS = [
  '',
  'Hello, world!',
  "I'm sure you're right, we'll see; they'd've DON'T It's",
  'function add(a, b) {\n\treturn a + b; // sum\n}\n\nconst x = add(1, 2) ?? 0;',
  'def f(x):\n    if x >= 10 and x != 3:\n        return [i**2 for i in range(x)]\n',
  'Family: 👩‍👩‍👧‍👦 flags 🇺🇸🇯🇵 skin 👍🏽 heart ❤️ keycap 1️⃣',
  '日本語のテキストです。中文文本，한국어 텍스트',
  'مرحبا بالعالم — שלום עולם (RTL) ‏mark‎',
  'नमस्ते दुनिया, हिन्दी में लिखा गया पाठ।',
  'Numbers: 0 7 42 123 1234 12345678901234567890 3.14159 -2.5e-10 ٣٤٥٦ ²³ Ⅻ',
  'whitespace:   \t\t \n\n\n  \r\n \u00a0\u3000\u2028 end   ',
  'URL https://example.com/a/b?q=1&x=%20y#frag and mailto:someone@example.org',
  '\uFEFFBOM at start, NEL\u0085here, combining e\u0301 and Zalgo Z\u0335\u0321a\u0334',
  "$PATH | grep ^~/x <a href='y'>z</a> `code` ~~strike~~ ||or|| ^^",
  '<|begin_of_text|>not special unless parsed<|eot_id|>',
];

// -- byte <-> unicode --------------------------------------------------------------------------------------

describe('byte-unicode', () => {
  it('is the GPT-2 bijection', () => {
    expect(BYTE_TO_UNICODE[0x20]).toBe('Ġ');
    expect(BYTE_TO_UNICODE[0x0a]).toBe('Ċ');
    expect(BYTE_TO_UNICODE[0x09]).toBe('ĉ');
    expect(BYTE_TO_UNICODE[0x41]).toBe('A');
    expect(BYTE_TO_UNICODE[0xad]).toBe('Ń');
    expect(new Set(BYTE_TO_UNICODE).size).toBe(256);
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    let s = '';
    for (const b of all) s += BYTE_TO_UNICODE[b];
    expect(byteLevelToBytes(s)).toEqual(all);
    expect(textToByteLevel(' é')).toBe('ĠÃ©');
  });
});

// -- pre-tokenizers ----------------------------------------------------------------------------------------

describe('pre-tokenizers', () => {
  const d = getPreTokenizer('default');
  const l = getPreTokenizer('llama-bpe');

  it('splits "Hello world\'s 12345 abc!!"', () => {
    // default: regex 1 isolates the punctuation runs "'" and "!!"; regex 2 (GPT-2) splits the gaps into
    // "Hello", " world" | "s", " 12345", " abc"; regex 3 (\p{N}+) splits " 12345" into " ", "12345";
    // regex 4 ([0-9]{3}) splits "12345" into "123", "45".
    expect(d.split("Hello world's 12345 abc!!")).toEqual(['Hello', ' world', "'", 's', ' ', '123', '45', ' abc', '!!']);
    // llama-bpe: "'s" is a contraction; " 12345": the space is not followed by a letter or punctuation,
    // so \s+ takes it alone and \p{N}{1,3} chunks the digits.
    expect(l.split("Hello world's 12345 abc!!")).toEqual(['Hello', ' world', "'s", ' ', '123', '45', ' abc', '!!']);
  });

  it('splits symbols, numbers and whitespace as derived from the regexes', () => {
    // default: regex 1 takes "=", "$", ",", ";" (P plus $+<=>^~|); regex 2 leaves "x", "  " (a whitespace
    // run at the end of its piece stays whole).
    expect(d.split('x  = $1,000;')).toEqual(['x', '  ', '=', ' ', '$', '1', ',', '000', ';']);
    // llama-bpe: "  " before "=" gives " " (\s+(?!\S)), then " =" and " $" ( ?[^\s\p{L}\p{N}]+).
    expect(l.split('x  = $1,000;')).toEqual(['x', ' ', ' =', ' $', '1', ',', '000', ';']);
    expect(d.split('12345678')).toEqual(['123', '456', '78']);
    expect(l.split('12345678')).toEqual(['123', '456', '78']);
    // default: "\n\n" before a letter -> "\n" (\s+(?!\S)) then "\n" (\s+); llama-bpe: \s*[\r\n]+ keeps both.
    expect(d.split('a\n\nb')).toEqual(['a', '\n', '\n', 'b']);
    expect(l.split('a\n\nb')).toEqual(['a', '\n\n', 'b']);
    // backtick is a symbol (Sk), not in default regex 1, so " `" stays together there.
    expect(d.split(' `a`')).toEqual([' `', 'a', '`']);
  });

  it('never loses characters', () => {
    const rand = prng(7);
    for (let i = 0; i < 200; i++) {
      const s = randomText(rand);
      expect(d.split(s).join('')).toBe(s);
      expect(l.split(s).join('')).toBe(s);
    }
  });

  it('accepts aliases and rejects unknown names with the supported list', () => {
    expect(getPreTokenizer('llama3').name).toBe('llama-bpe');
    expectTokError(() => getPreTokenizer('qwen2'), 'PRETOKENIZER_UNKNOWN');
    expect(() => getPreTokenizer('qwen2')).toThrow(/default, llama-bpe/);
  });
});

// -- BPE core ----------------------------------------------------------------------------------------------

describe('bpeMerge', () => {
  it('applies merges by rank, leftmost first on ties', () => {
    expect(bpeMerge('aaa', buildMergeRanks(['a a']))).toEqual(['aa', 'a']);
    expect(bpeMerge('abc', buildMergeRanks(['b c', 'a b']))).toEqual(['a', 'bc']);
    expect(bpeMerge('abc', buildMergeRanks(['a b', 'b c']))).toEqual(['ab', 'c']);
    expect(bpeMerge('abcd', buildMergeRanks(['c d', 'a b', 'ab cd']))).toEqual(['abcd']);
    expect(bpeMerge('', buildMergeRanks([]))).toEqual([]);
  });

  it('agrees with a naive rescan-and-merge BPE on random words', () => {
    const ranks = buildMergeRanks(vocab.merges);
    const naive = (w: string): string[] => {
      const s = [...w];
      for (;;) {
        let best = -1;
        let bestRank = Number.POSITIVE_INFINITY;
        for (let i = 0; i + 1 < s.length; i++) {
          const r = ranks.get(s[i] + ' ' + s[i + 1]);
          if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
        }
        if (best < 0) return s;
        s.splice(best, 2, s[best] + s[best + 1]);
      }
    };
    const rand = prng(11);
    const alphabet = 'ĠetaoinshrdlTHE0123.';
    for (let i = 0; i < 1000; i++) {
      let w = '';
      const n = 1 + Math.floor(rand() * 30);
      for (let j = 0; j < n; j++) w += alphabet[Math.floor(rand() * alphabet.length)];
      expect(bpeMerge(w, ranks)).toEqual(naive(w));
    }
  });
});

// -- synthetic vocab ---------------------------------------------------------------------------------------

describe('makeSyntheticVocab', () => {
  it('has the documented layout and valid merges', () => {
    for (const n of [262, 1000, 8192]) {
      const v = n === 8192 ? vocab : makeSyntheticVocab(n);
      expect(v.tokens.length).toBe(n);
      expect(v.merges.length).toBe(n - 259);
      expect(new Set(v.tokens).size).toBe(n);
      expect(v.tokens.slice(0, 256)).toEqual(BYTE_TO_UNICODE);
      expect([v.tokens[v.bosId], v.tokens[v.eosId], v.tokens[v.eotId]]).toEqual([
        '<|begin_of_text|>',
        '<|end_of_text|>',
        '<|eot_id|>',
      ]);
      expect([v.bosId, v.eosId, v.eotId]).toEqual([n - 3, n - 2, n - 1]);
      expect(Array.from(v.tokenTypes.slice(n - 4))).toEqual([1, 3, 3, 3]);
      const index = new Map(v.tokens.map((t, i) => [t, i]));
      v.merges.forEach((m, i) => {
        const [a, b] = m.split(' ');
        expect(index.get(a)).toBeLessThan(256 + i);
        expect(index.get(b)).toBeLessThan(256 + i);
        expect(v.tokens[256 + i]).toBe(a + b);
      });
    }
    expect(vocab.merges.slice(0, 3)).toEqual(['Ġ e', 'Ġ t', 'Ġ a']);
    expectTokError(() => makeSyntheticVocab(261), 'TOKENIZER_INVALID');
  });

  it('compresses ordinary English', () => {
    const text = 'The people of the world would like to make this work, and they will.';
    expect(tokDefault.encode(text).length).toBeLessThan(text.length / 2.5);
  });
});

// -- encode / decode ---------------------------------------------------------------------------------------

describe('encode/decode round trips', () => {
  for (const [name, tok] of both) {
    it(`corpus (${name})`, () => {
      for (const s of CORPUS) {
        const ids = tok.encode(s);
        for (const id of ids) expect(tok.isSpecial(id)).toBe(false);
        expect(tok.decode(ids)).toBe(s);
      }
    });

    it(`500 random strings (${name})`, () => {
      const rand = prng(name === 'default' ? 1 : 2);
      for (let i = 0; i < 500; i++) {
        const s = randomText(rand);
        expect(tok.decode(tok.encode(s))).toBe(s);
      }
    });
  }

  it('encodes byte tokens for unmerged multibyte text and matches whole-vocab words with llama-bpe', () => {
    expect(tokDefault.encode('é')).toEqual([0xc3, 0xa9]);
    // llama-bpe ignores merges when the whole piece is a vocab token (HF ignore_merges / llama.cpp).
    const w = vocab.tokens[vocab.merges.length + 255]; // last merged token: a fill string like 'Ġxyz' or 'xyz'
    const text = new TextDecoder().decode(byteLevelToBytes(w));
    expect(tokLlama3.encode(text)).toEqual([vocab.merges.length + 255]);
  });

  it('batches', () => {
    expect(tokDefault.encodeBatch(['a b', 'c'])).toEqual([tokDefault.encode('a b'), tokDefault.encode('c')]);
    expect(tokDefault.decodeBatch(tokDefault.encodeBatch(['a b', 'é']))).toEqual(['a b', 'é']);
  });
});

describe('special tokens', () => {
  const { bosId, eosId, eotId } = vocab;

  it('matches control-token text only with parseSpecial', () => {
    const text = '<|eot_id|>hi<|begin_of_text|>';
    expect(tokDefault.encode(text, { parseSpecial: true })).toEqual([eotId, ...tokDefault.encode('hi'), bosId]);
    const plain = tokDefault.encode(text);
    expect(plain).not.toContain(eotId);
    expect(plain).not.toContain(bosId);
    expect(tokDefault.decode(plain)).toBe(text);
  });

  it('adds BOS only with addSpecialTokens and when the vocab says add_bos', () => {
    expect(tokDefault.encode('hi', { addSpecialTokens: true })).toEqual([bosId, ...tokDefault.encode('hi')]);
    expect(tokDefault.encode('', { addSpecialTokens: true })).toEqual([bosId]);
    const noBos = createTokenizerFromGGUF(syntheticVocabMetadata(vocab, { addBos: false }));
    expect(noBos.encode('hi', { addSpecialTokens: true })).toEqual(tokDefault.encode('hi'));
  });

  it('skipSpecialTokens drops control tokens in decode, tokenBytes and streaming', () => {
    const ids = [bosId, ...tokDefault.encode('Hello'), eotId];
    expect(tokDefault.decode(ids)).toBe('<|begin_of_text|>Hello<|eot_id|>');
    expect(tokDefault.decode(ids, { skipSpecialTokens: true })).toBe('Hello');
    expect(tokDefault.tokenBytes(bosId, { skipSpecialTokens: true }).length).toBe(0);
    expect(new TextDecoder().decode(tokDefault.tokenBytes(bosId))).toBe('<|begin_of_text|>');
    const sd = tokDefault.createStreamingDecoder({ skipSpecialTokens: true });
    expect(ids.map((id) => sd.push(id)).join('') + sd.flush()).toBe('Hello');
    expect(tokDefault.isSpecial(bosId)).toBe(true);
    expect(tokDefault.isSpecial(0x41)).toBe(false);
    expect(tokDefault.tokenText(0x20)).toBe('Ġ');
  });

  it('reports special ids and the end-of-generation set', () => {
    expect(tokDefault.specialTokens).toEqual({
      bosTokenId: bosId,
      eosTokenId: eosId,
      padTokenId: eosId,
      eotTokenId: eotId,
    });
    expect([...tokDefault.eogTokenIds].sort((a, b) => a - b)).toEqual([eosId, eotId]);
    const explicit = createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.eot_token_id': { type: 4, value: 300 } }));
    expect(explicit.specialTokens.eotTokenId).toBe(300);
    expect([...explicit.eogTokenIds].sort((a, b) => a - b)).toEqual([300, eosId, eotId]);
  });

  it('always matches user-defined tokens (llama.cpp / HF behaviour)', () => {
    const tokens = [...BYTE_TO_UNICODE, '<tool>', '<|ctl|>'];
    const tokenTypes = new Int32Array(tokens.length).fill(TokenType.NORMAL);
    tokenTypes[256] = TokenType.USER_DEFINED;
    tokenTypes[257] = TokenType.CONTROL;
    const tok = createByteLevelBpeTokenizer({ tokens, merges: [], tokenTypes });
    expect(tok.encode('a<tool>b')).toEqual([0x61, 256, 0x62]);
    expect(tok.encode('<|ctl|>')).not.toContain(257);
    expect(tok.encode('<|ctl|><tool>', { parseSpecial: true })).toEqual([257, 256]);
    expect(tok.decode([256, 257], { skipSpecialTokens: true })).toBe('<tool>');
  });
});

describe('streaming decoder', () => {
  it('holds incomplete UTF-8 until the character is complete', () => {
    const sd = tokDefault.createStreamingDecoder();
    expect(sd.push(0xc3)).toBe('');
    expect(sd.push(0xa9)).toBe('é');
    expect(sd.push(0xe2)).toBe('');
    expect(sd.flush()).toBe('\uFFFD'); // a dangling lead byte is replaced only at flush
    expect(sd.push(0x41)).toBe('A');
  });

  it('never emits U+FFFD for valid text split at every token', () => {
    const rand = prng(3);
    const inputs = [...CORPUS, ...Array.from({ length: 200 }, () => randomText(rand))];
    for (const [, tok] of both) {
      for (const s of inputs) {
        const sd = tok.createStreamingDecoder();
        let out = '';
        for (const id of tok.encode(s)) {
          const piece = sd.push(id);
          expect(piece.includes('\uFFFD') && !s.includes('\uFFFD')).toBe(false);
          out += piece;
        }
        out += sd.flush();
        expect(out).toBe(s);
      }
    }
  });
});

// -- metadata errors ---------------------------------------------------------------------------------------

describe('bad metadata', () => {
  it('gives typed errors', () => {
    expectTokError(() => createTokenizerFromGGUF(new Map()), 'TOKENIZER_MISSING');
    expectTokError(
      () => createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.model': { type: 8, value: 'bert' } })),
      'TOKENIZER_UNSUPPORTED',
    );
    expectTokError(
      () => createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.tokens': undefined })),
      'TOKENIZER_MISSING',
    );
    expectTokError(
      () => createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.merges': undefined })),
      'TOKENIZER_MISSING',
    );
    expectTokError(
      () =>
        createTokenizerFromGGUF(
          withMeta({ 'tokenizer.ggml.tokens': { type: 9, arrayType: 4, value: new Uint32Array(3) } }),
        ),
      'TOKENIZER_INVALID',
    );
    expectTokError(
      () =>
        createTokenizerFromGGUF(
          withMeta({ 'tokenizer.ggml.token_type': { type: 9, arrayType: 5, value: new Int32Array(5) } }),
        ),
      'TOKENIZER_INVALID',
    );
    // an id outside the vocabulary is ignored as llama.cpp ignores it; a value that is no id is refused
    const outside = createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.bos_token_id': { type: 4, value: 1 << 20 } }));
    expect(outside.specialTokens.bosTokenId).toBeUndefined();
    expectTokError(
      () => createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.bos_token_id': { type: 8, value: 'one' } })),
      'TOKENIZER_INVALID',
    );
    expectTokError(
      () => createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.pre': { type: 8, value: 'nonesuch' } })),
      'PRETOKENIZER_UNKNOWN',
    );
    expectTokError(() => createTokenizerFromGGUF(meta, { preTokenizer: 'nonesuch' }), 'PRETOKENIZER_UNKNOWN');
    // u64 ids arrive as bigint and are accepted.
    const big = createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.bos_token_id': { type: 10, value: 5n } }));
    expect(big.specialTokens.bosTokenId).toBe(5);
  });

  it('rejects bad ids and inputs', () => {
    expectTokError(() => tokDefault.decode([vocab.tokens.length]), 'TOKEN_ID_OUT_OF_RANGE');
    expectTokError(() => tokDefault.tokenText(-1), 'TOKEN_ID_OUT_OF_RANGE');
    expectTokError(() => tokDefault.decode([1.5]), 'TOKEN_ID_OUT_OF_RANGE');
    expectTokError(() => tokDefault.encode(42 as unknown as string), 'TOKENIZER_BAD_INPUT');
  });

  it('honours tokenizer.ggml.pre', () => {
    const tok = createTokenizerFromGGUF(withMeta({ 'tokenizer.ggml.pre': { type: 8, value: 'llama-bpe' } }));
    expect(tok.preTokenizer).toBe('llama-bpe');
    expect(tokDefault.preTokenizer).toBe('default');
  });
});

// -- scale -------------------------------------------------------------------------------------------------

describe('LLaMA-3-sized vocab', () => {
  it('builds and encodes a 128256-token vocab (timing printed, not asserted)', () => {
    const t0 = performance.now();
    const v = makeSyntheticVocab(128256);
    const t1 = performance.now();
    const tok = createTokenizerFromGGUF(syntheticVocabMetadata(v));
    const t2 = performance.now();
    const text = CORPUS.join('\n').repeat(200);
    const ids = tok.encode(text);
    const t3 = performance.now();
    expect(tok.decode(ids)).toBe(text);
    const t4 = performance.now();
    console.log(
      `[tokenizer] vocab 128256: synth ${(t1 - t0).toFixed(0)} ms, build ${(t2 - t1).toFixed(0)} ms, ` +
        `encode ${text.length} chars -> ${ids.length} tokens ${(t3 - t2).toFixed(0)} ms, decode ${(t4 - t3).toFixed(0)} ms`,
    );
    expect(v.tokens.length).toBe(128256);
  });
});
