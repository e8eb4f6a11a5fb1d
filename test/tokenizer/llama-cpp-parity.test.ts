/**
 * Id-for-id parity with llama.cpp's tokenizer (node-llama-cpp 3.21.1, `loadModel({vocabOnly: true})`,
 * `tokenize(text, special)`) on the same vocab-only GGUF files:
 *
 *   - BitNet 2B-4T-shaped LLaMA-3 vocab, no `tokenizer.ggml.pre` -> llama.cpp's `default` splitter
 *   - the same vocab with `pre = llama-bpe`                       -> the LLaMA-3 splitter
 *   - LLaMA-2 SentencePiece (`tokenizer.ggml.model = llama`)
 *
 * Corpora: the curated corpus, seeded random text (including Unicode 16/17 code points, which llama.cpp's
 * Unicode 15.1 tables treat as unassigned), held-out README text of the installed packages, and random text
 * with special-token texts for parseSpecial. All strings go to one child process (one model load per vocab).
 * Fails, never skips, when node-llama-cpp cannot be installed or loaded.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GGUFMetadata } from '../../src/gguf/metadata.ts';
import { createTokenizerFromGGUF, type Tokenizer } from '../../src/tokenizer/index.ts';
import { ensureOracleInstalled, runNode } from '../oracle/oracle-setup.ts';
import { CURATED, randomCorpus, randomWithSpecials } from './corpus.ts';
import { heldOutChunks } from './heldout.ts';
import { bitnet2b4tMetadata, llama2Metadata, writeVocabOnlyGGUF } from './vocabs.ts';

const SCRIPT = join(import.meta.dirname, 'llama-tokenize.mjs');

interface Case {
  name: string;
  meta: GGUFMetadata;
  specials: string[];
}
const CASES: Case[] = [
  {
    name: 'default (2B-4T, no pre key)',
    meta: bitnet2b4tMetadata(),
    specials: [
      '<|begin_of_text|>',
      '<|end_of_text|>',
      '<|eot_id|>',
      '<|start_header_id|>',
      '<|end_header_id|>',
      '<|reserved_special_token_4|>',
      '<|reserved_special_token_250|>',
      '<|eot_id',
      '<|',
      '|>',
    ],
  },
  {
    name: 'llama-bpe',
    meta: bitnet2b4tMetadata({ pre: 'llama-bpe' }),
    specials: ['<|begin_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id', '|>'],
  },
  { name: 'SentencePiece (LLaMA-2)', meta: llama2Metadata(), specials: ['<s>', '</s>', '<unk>', '<s', ' </s> '] },
];

const plain = [...CURATED, ...randomCorpus(0x5eed01, 1500), ...heldOutChunks(2000, 300_000)];
const withSpecials = (c: Case, i: number) => [...CURATED, ...randomWithSpecials(0x5eed10 + i, 400, c.specials)];

interface Row {
  vocab: string;
  parseSpecial: boolean;
  strings: number;
  chars: number;
  tokens: number;
  mismatches: number;
}
const rows: Row[] = [];
let dir = '';
let oracle: number[][][][] = [];
const toks: Tokenizer[] = [];

describe('llama.cpp tokenizer parity (node-llama-cpp 3.21.1)', () => {
  beforeAll(async () => {
    await ensureOracleInstalled(); // throws (the tests fail) if the install or the binary is broken
    dir = await mkdtemp(join(tmpdir(), 'bitnet-tok-parity-'));
    const jobs = [];
    for (const [i, c] of CASES.entries()) {
      const model = await writeVocabOnlyGGUF(c.meta, join(dir, `vocab${i}.gguf`));
      jobs.push({
        model,
        runs: [
          { texts: plain, special: false },
          { texts: withSpecials(c, i), special: true },
        ],
      });
      toks.push(createTokenizerFromGGUF(c.meta));
    }
    const jobsFile = join(dir, 'jobs.json');
    await writeFile(jobsFile, JSON.stringify(jobs));
    oracle = (JSON.parse(await runNode(SCRIPT, [jobsFile])) as { results: number[][][][] }).results;
  }, 600_000);

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    if (rows.length > 0) {
      console.log('\ntokenizer parity vs llama.cpp (node-llama-cpp 3.21.1), id for id');
      console.table(rows);
    }
  });

  for (const [i, c] of CASES.entries()) {
    for (const parseSpecial of [false, true]) {
      it(`${c.name}, parseSpecial=${parseSpecial}: every string identical`, () => {
        const texts = parseSpecial ? withSpecials(c, i) : plain;
        const ref = oracle[i][parseSpecial ? 1 : 0];
        expect(ref.length).toBe(texts.length);
        const bad: string[] = [];
        let tokens = 0;
        texts.forEach((t, k) => {
          const ours = toks[i].encode(t, { parseSpecial });
          tokens += ref[k].length;
          if (ours.length !== ref[k].length || ours.some((id, j) => id !== ref[k][j])) bad.push(t);
        });
        rows.push({
          vocab: c.name,
          parseSpecial,
          strings: texts.length,
          chars: texts.reduce((a, t) => a + t.length, 0),
          tokens,
          mismatches: bad.length,
        });
        expect(bad.slice(0, 5)).toEqual([]);
      });
    }
  }

  it('can fail: the other splitter, or no space prefix, disagrees with llama.cpp', () => {
    const swapped = [
      createTokenizerFromGGUF(CASES[0].meta, { preTokenizer: 'llama-bpe' }),
      createTokenizerFromGGUF(CASES[1].meta, { preTokenizer: 'default' }),
    ];
    for (const [i, tok] of swapped.entries()) {
      const ref = oracle[i][0];
      const diff = plain.filter((t, k) => JSON.stringify(tok.encode(t)) !== JSON.stringify(ref[k])).length;
      expect(diff / plain.length).toBeGreaterThan(0.2);
    }
    // SentencePiece without the space prefix: every non-empty string that does not start with a space differs.
    const m = new Map(CASES[2].meta);
    m.set('tokenizer.ggml.add_space_prefix', { type: 7, value: false });
    const noPrefix = createTokenizerFromGGUF(m);
    const ref = oracle[2][0];
    const diff = plain.filter((t, k) => JSON.stringify(noPrefix.encode(t)) !== JSON.stringify(ref[k])).length;
    expect(diff / plain.length).toBeGreaterThan(0.9);
  });
});
