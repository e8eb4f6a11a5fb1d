/**
 * `bitnet tokenize` as a user runs it, on vocab-only GGUF files (no tensors): --text, --input (JSON array in,
 * JSON array of id arrays out), --bos, --parse-special, --pre-tokenizer, --json, and bad input.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeGGUF } from '../../src/gguf/writer.ts';
import { makeSyntheticVocab, syntheticVocabMetadata } from '../../src/tokenizer/index.ts';
import { bitnet2b4tMetadata, llama2Metadata, writeVocabOnlyGGUF } from './vocabs.ts';

const exec = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'bitnet.js');
async function bitnet(...args: string[]) {
  try {
    const r = await exec(process.execPath, [BIN, ...args], { maxBuffer: 64 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

let dir = '';
let b4t = '';
let small = '';
let spm = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitnet-tokenize-'));
  b4t = await writeVocabOnlyGGUF(bitnet2b4tMetadata(), join(dir, '2b4t-vocab.gguf'));
  spm = await writeVocabOnlyGGUF(llama2Metadata(), join(dir, 'llama2-vocab.gguf'));
  // A bare tokenizer-only file: no architecture keys at all.
  small = join(dir, 'small.gguf');
  await writeFile(small, await encodeGGUF(syntheticVocabMetadata(makeSyntheticVocab(1000)), []));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('bitnet tokenize', () => {
  it('--text prints comma-separated ids, no BOS unless --bos; specials are text unless --parse-special', async () => {
    // The 2B-4T vocab (128k tokens, 280k merges) three times; the cheaper checks on the LLaMA-2 vocab.
    const [plain, special, llama, bos, json, notSpecial] = await Promise.all([
      bitnet('tokenize', '--model', b4t, '--text', "It's 2024: 1234567 items!!"),
      bitnet('tokenize', '--model', b4t, '--text', 'Hi<|eot_id|>', '--parse-special', '--json', '--bos'),
      bitnet('tokenize', '--model', b4t, '--text', "It's 2024: 1234567 items!!", '--pre-tokenizer', 'llama-bpe'),
      bitnet('tokenize', '--model', spm, '--text', 'Hello world', '--bos'),
      bitnet('tokenize', '--model', spm, '--text', 'Hello world', '--json'),
      bitnet('tokenize', '--model', spm, '--text', 'Hi</s>', '--json'),
    ]);
    expect(plain).toMatchObject({ code: 0, stdout: '2181,6,82,220,2366,19,25,220,4513,10961,22,3673,3001\n' });
    expect(JSON.parse(special.stdout)).toEqual([128000, 13347, 128009]);
    expect(llama.stdout).toBe('2181,596,220,2366,19,25,220,4513,10961,22,3673,3001\n');
    expect(bos.stdout).toBe('1,15043,3186\n');
    expect(JSON.parse(json.stdout)).toEqual([15043, 3186]);
    expect(JSON.parse(notSpecial.stdout)).not.toContain(2);
  });

  it('--input takes a JSON array of strings and prints a JSON array of id arrays', async () => {
    const input = join(dir, 'in.json');
    await writeFile(input, JSON.stringify(['Hello world', '', 'Hello']));
    const [r, s] = await Promise.all([
      bitnet('tokenize', '--model', spm, '--input', input),
      bitnet('tokenize', '--model', spm, '--input', input, '--bos'),
    ]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([[15043, 3186], [], [15043]]);
    expect(JSON.parse(s.stdout)).toEqual([[1, 15043, 3186], [1], [1, 15043]]);
  });

  it('needs only tokenizer metadata', async () => {
    const r = await bitnet('tokenize', '--model', small, '--text', 'the world', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).length).toBeGreaterThan(0);
  });

  it('rejects bad input with an error code', async () => {
    const notArray = join(dir, 'bad.json');
    await writeFile(notArray, JSON.stringify({ text: 'x' }));
    const [both, none, bad, pre] = await Promise.all([
      bitnet('tokenize', '--model', small, '--text', 'x', '--input', notArray),
      bitnet('tokenize', '--model', small),
      bitnet('tokenize', '--model', small, '--input', notArray),
      bitnet('tokenize', '--model', small, '--text', 'x', '--pre-tokenizer', 'nope'),
    ]);
    expect(both.code).toBe(2); // a usage error
    expect(both.stderr).toMatch(/BAD_FLAG/);
    expect(none.code).toBe(2);
    expect(bad.stderr).toMatch(/BAD_INPUT/);
    // a usage error before the model is opened (a missing file would otherwise be reported first)
    expect([pre.code, pre.stderr]).toEqual([
      2,
      expect.stringMatching(/BAD_FLAG\]: --pre-tokenizer must be one of default, llama-bpe, gpt-2, /),
    ]);
    const early = await bitnet('tokenize', '--model', `${small}.missing`, '--text', 'x', '--pre-tokenizer', 'nope');
    expect([early.code, early.stderr]).toEqual([2, expect.stringContaining('--pre-tokenizer must be one of')]);
  });
});
