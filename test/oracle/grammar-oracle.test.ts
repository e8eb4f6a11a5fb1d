/**
 * Outside oracle for grammars: at every step of a constrained generation, the tokens our grammar
 * mask allows must be exactly those llama.cpp's grammar sampler allows (node-llama-cpp 3.21.1, CPU;
 * test/oracle/llama/grammar.mjs), on the same GGUF vocabulary and the same GBNF text. The grammars
 * are JSON mode's, two our JSON-schema converter writes (one with regex patterns), and small ones
 * over Unicode classes and repetitions. Paths are walked by our own mask (a seeded random allowed token each step, ends
 * excluded so the paths go deep), and llama.cpp accepts every token of them.
 *
 * A few tokens are left out of the comparison, where the two differ by design (outOfComparison).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { compileGrammar, GrammarMode } from '../../src/generate/grammar/grammar-mode.ts';
import { JSON_OBJECT_GBNF } from '../../src/generate/grammar/json-grammar.ts';
import { jsonSchemaToGbnf } from '../../src/generate/grammar/json-schema.ts';
import { createRng } from '../../src/generate/prng.ts';
import type { Tokenizer } from '../../src/tokenizer/types.ts';
import { ensureOracleInstalled, ORACLE_DIR, REPO_ROOT, runNode } from './oracle-setup.ts';

const BIN = join(REPO_ROOT, 'bin', 'bitnet.js');
const STEPS = 48;
const PATHS = 3;

const GRAMMARS: Record<string, string> = {
  'JSON mode': JSON_OBJECT_GBNF,
  'a JSON schema': jsonSchemaToGbnf({
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 10 },
      n: { type: 'integer', minimum: -40, maximum: 1200 },
      x: { type: 'number' },
      tags: { type: 'array', items: { enum: ['a', 'b c', 'é'] }, maxItems: 4 },
      when: { type: 'string', format: 'date-time' },
      more: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
    },
    required: ['name', 'n', 'x', 'tags', 'when', 'more'],
  }),
  patterns: jsonSchemaToGbnf({
    type: 'object',
    properties: {
      code: { type: 'string', pattern: '^[A-Z]{2}-\\d{3}$' },
      mail: { type: 'string', pattern: '^\\w+@\\w+\\.(com|org)$' },
      free: { type: 'string', pattern: 'a.c' },
      quoted: { type: 'string', pattern: '^[^a-z]{1,3}$' },
    },
    required: ['code', 'mail', 'free', 'quoted'],
  }),
  'Unicode classes': 'root ::= ([a-zé-ü] | [\\u4e00-\\u9fff] | "😀")+ "." [^\\x00-\\x7F]{1,3}',
  'repetitions and any': 'root ::= ("ab" | "a" [0-9]{2,4})* "|" .{0,5} "|"',
};

let dir: string;
let file: string;
let tok: Tokenizer;

beforeAll(async () => {
  await ensureOracleInstalled();
  dir = await mkdtemp(join(tmpdir(), 'bitnet-grammar-oracle-'));
  file = join(dir, 'vocab.gguf');
  // a small model whose vocabulary llama.cpp loads (the logits oracle's kind of file)
  await runNode(BIN, [
    'synth',
    ...['--hidden', '256', '--layers', '1', '--heads', '2', '--kv-heads', '1', '--ffn', '512', '--vocab', '1000'],
    ...['--ctx', '64', '--qtype', 'tq2_0', '--arch', 'bitnet', '--seed', '17', '--out', file],
  ]);
  tok = (await BitNetModel.fromFile(file)).tokenizer!;
}, 600_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * Tokens left out of the comparison, where llama.cpp and we differ by design: control tokens other
 * than the ends (llama.cpp matches them by their text, "<|begin_of_text|>" inside a JSON string;
 * we never sample them under a grammar), tokens with a NUL (llama.cpp never allows them), and
 * tokens with a byte no UTF-8 text holds (C0, C1, F5-FF: llama.cpp takes F5-FF as the start of
 * a character past U+10FFFF that a negated class matches; we refuse them).
 */
function outOfComparison(id: number): boolean {
  if (tok.isEog(id)) return false;
  if (tok.isSpecial(id)) return true;
  return tok.tokenBytes(id, { skipSpecialTokens: false }).some((b) => b === 0 || b === 0xc0 || b === 0xc1 || b >= 0xf5);
}

/**
 * Whether `id`, after `before` (which ends one byte into a character led by E0, F0 or F4), would make
 * a byte sequence no UTF-8 text holds: an overlong form (E0 80-9F, F0 80-8F) or past U+10FFFF
 * (F4 90-BF). We refuse those; llama.cpp checks a character's least code point by the bytes still
 * missing rather than by its length, and takes them.
 */
function badSecondByte(before: number[], id: number): boolean {
  const lead = before[before.length - 1];
  const b = tok.tokenBytes(id, { skipSpecialTokens: false })[0];
  if (lead === 0xe0) return b < 0xa0;
  if (lead === 0xf0) return b < 0x90;
  if (lead === 0xf4) return b >= 0x90;
  return false;
}

/** Our allowed ids at every step of `paths` (each walked by our mask from the start). */
function ourAllowed(gbnf: string, path: number[]): number[][] {
  const mode = new GrammarMode(compileGrammar({ gbnf }), tok, tok.eogTokenIds);
  const out: number[][] = [];
  for (let step = 0; step <= path.length; step++) {
    const m = mode.mask(new Float32Array(tok.vocabSize));
    out.push([...m.keys()].filter((id) => m[id] === 0));
    if (step < path.length) mode.push(path[step]);
  }
  return out;
}

/** A path of up to STEPS tokens our mask allows, chosen at random (ends excluded). */
function walk(gbnf: string, seed: number): number[] {
  const rng = createRng(seed);
  const mode = new GrammarMode(compileGrammar({ gbnf }), tok, tok.eogTokenIds);
  const path: number[] = [];
  while (path.length < STEPS && !mode.done) {
    const m = mode.mask(new Float32Array(tok.vocabSize));
    const next = [...m.keys()].filter((id) => m[id] === 0 && !tok.eogTokenIds.has(id));
    if (next.length === 0) break;
    const id = next[Math.floor(rng.nextFloat() * next.length)];
    mode.push(id);
    path.push(id);
  }
  return path;
}

describe("grammar masks agree with llama.cpp's grammar sampler", () => {
  for (const [label, gbnf] of Object.entries(GRAMMARS)) {
    it(label, async () => {
      const paths = Array.from({ length: PATHS }, (_, i) => walk(gbnf, 100 + i));
      const job = join(dir, 'job.json');
      await writeFile(job, JSON.stringify({ grammar: gbnf, paths }));
      const llama = JSON.parse(await runNode(join(ORACLE_DIR, 'grammar.mjs'), [file, `@${job}`], ORACLE_DIR)) as {
        nVocab: number;
        paths: { allowed: number[][] }[];
      };
      expect(llama.nVocab).toBe(tok.vocabSize);
      const skip = new Set([...Array(tok.vocabSize).keys()].filter(outOfComparison));
      let steps = 0;
      let compared = 0;
      for (let p = 0; p < PATHS; p++) {
        const ours = ourAllowed(gbnf, paths[p]);
        expect(ours).toHaveLength(llama.paths[p].allowed.length);
        for (let s = 0; s < ours.length; s++) {
          const before = paths[p].slice(0, s).flatMap((id) => [...tok.tokenBytes(id, { skipSpecialTokens: false })]);
          const out = (id: number) => skip.has(id) || badSecondByte(before, id);
          const a = ours[s].filter((id) => !out(id));
          const b = llama.paths[p].allowed[s].filter((id) => !out(id));
          expect(
            a,
            `${label}: path ${p} step ${s} (after ${JSON.stringify(tok.decode(paths[p].slice(0, s)))})`,
          ).toEqual(b);
          steps++;
          compared += a.length;
        }
      }
      console.log(
        `  ${label}: ${steps} steps over ${PATHS} paths, ${compared} allowed tokens, identical sets at every step (${skip.size} of ${tok.vocabSize} tokens left out)`,
      );
      // the paths went somewhere: at least one step allowed several tokens
      expect(compared).toBeGreaterThan(steps);
    }, 300_000);
  }
});
