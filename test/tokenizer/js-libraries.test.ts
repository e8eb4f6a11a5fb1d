/**
 * Parity with the JS reference tokenizers on their own data:
 *
 * - llama3-tokenizer-js 1.2.0 (LLaMA-3 vocab and merges, HF's `llama-bpe` regex): ours with `llama-bpe` on a
 *   GGUF built from the package's vocab/merges. llama3-tokenizer-js always parses special-token text, so we
 *   compare with parseSpecial.
 * - llama-tokenizer-js 1.2.2 (LLaMA-2 SentencePiece): ours on a `llama` GGUF built from its vocab, with scores
 *   that reproduce its merge order (vocabs.ts).
 *
 * Known, documented differences of the JS libraries (strings containing them are compared against llama.cpp
 * instead, in llama-cpp-parity.test.ts, where we match): llama3-tokenizer-js uses JS `\s` (which includes
 * U+FEFF and excludes U+0085, unlike Unicode White_Space used by HF tokenizers and llama.cpp) and the JS
 * engine's Unicode 17 tables (llama.cpp's are 15.1); both libraries encode a lone surrogate's replacement
 * character differently from llama.cpp. Those strings are counted and reported, not compared.
 */
import llama2 from 'llama-tokenizer-js';
import llama3 from 'llama3-tokenizer-js';
import { afterAll, describe, expect, it } from 'vitest';
import { createTokenizerFromGGUF } from '../../src/tokenizer/index.ts';
import { CURATED, isNewerUnicode, randomCorpus, randomWithSpecials } from './corpus.ts';
import { heldOutChunks } from './heldout.ts';
import { bitnet2b4tMetadata, llama2Metadata } from './vocabs.ts';

const hasLoneSurrogate = (s: string) => !(s as unknown as { isWellFormed(): boolean }).isWellFormed();
const hasNewerUnicode = (s: string) => {
  for (const ch of s) if (isNewerUnicode(ch.codePointAt(0) as number)) return true;
  return false;
};
/** Strings where llama3-tokenizer-js deviates from HF / llama.cpp by construction (see the file comment). */
const llama3Deviates = (s: string) => /[\u0085\uFEFF]/.test(s) || hasLoneSurrogate(s) || hasNewerUnicode(s);

const L3_SPECIALS = ['<|begin_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<|end_header_id|>', '<|eom_id|>'];
const corpus = [
  ...CURATED,
  ...randomCorpus(0xa11ce, 3000, { allowNewer: false }),
  ...randomWithSpecials(0xb0b, 300, L3_SPECIALS),
  ...heldOutChunks(3000, 400_000),
];

const rows: Record<string, unknown>[] = [];
afterAll(() => {
  console.log('\ntokenizer parity vs JS libraries, id for id');
  console.table(rows);
});

const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

describe('llama3-tokenizer-js (LLaMA-3, llama-bpe)', () => {
  it('matches id for id', () => {
    // LLaMA-3.1 special names, as the package has them.
    const tok = createTokenizerFromGGUF(bitnet2b4tMetadata({ pre: 'llama-bpe', bitnetNames: false }));
    const compared = corpus.filter((s) => !llama3Deviates(s));
    const bad = compared.filter(
      (s) => !same(tok.encode(s, { parseSpecial: true }), llama3.encode(s, { bos: false, eos: false })),
    );
    rows.push({
      library: 'llama3-tokenizer-js 1.2.0',
      strings: compared.length,
      chars: compared.reduce((a, s) => a + s.length, 0),
      mismatches: bad.length,
      'excluded (JS \\s / Unicode 17 / lone surrogates)': corpus.length - compared.length,
    });
    expect(bad.slice(0, 5)).toEqual([]);
    expect(compared.length).toBeGreaterThan(3000);
  });

  it('the excluded strings really are where the library differs from llama.cpp semantics', () => {
    const tok = createTokenizerFromGGUF(bitnet2b4tMetadata({ pre: 'llama-bpe', bitnetNames: false }));
    for (const s of ['a \u0085b', 'a \uFEFFb', 'a \u{10D40}b']) {
      expect(same(tok.encode(s), llama3.encode(s, { bos: false, eos: false }))).toBe(false);
    }
  });
});

describe('llama-tokenizer-js (LLaMA-2 SentencePiece)', () => {
  it('matches id for id', () => {
    const tok = createTokenizerFromGGUF(llama2Metadata());
    const compared = corpus.filter((s) => !hasLoneSurrogate(s));
    const bad = compared.filter((s) => !same(tok.encode(s), llama2.encode(s, false)));
    rows.push({
      library: 'llama-tokenizer-js 1.2.2',
      strings: compared.length,
      chars: compared.reduce((a, s) => a + s.length, 0),
      mismatches: bad.length,
      'excluded (JS \\s / Unicode 17 / lone surrogates)': corpus.length - compared.length,
    });
    expect(bad.slice(0, 5)).toEqual([]);
  });
});
