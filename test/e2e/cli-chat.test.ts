// `bitnet chat`: a conversation over stdin, one user message per line, rendered with the model's
// chat template each turn and reusing the previous turns through the prompt cache.
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeGGUF } from '../../src/gguf/writer.ts';
import { synthModel } from '../../src/model/synth.ts';
import { synthFile, TINY } from '../helpers/models.ts';

/** Runs `bitnet chat` with `input` on stdin. */
function chat(args: string[], input: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/bitnet.js', 'chat', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input);
  });
}

let model: string;
let noTokenizer: string;
beforeAll(async () => {
  model = await synthFile({ qtype: 'i2_s', seed: 4, arch: 'bitnet-b1.58' });
  const m = synthModel({ ...TINY, qtype: 'i2_s', seed: 4 });
  noTokenizer = join(dirname(model), 'no-tokenizer.gguf');
  await writeFile(
    noTokenizer,
    await encodeGGUF(
      m.metadata.filter(([k]) => !k.startsWith('tokenizer.')),
      m.tensors,
    ),
  );
});

describe('bitnet chat', () => {
  it('one turn per line: each later turn reuses the conversation so far from the prompt cache; /exit ends', async () => {
    const args = ['--model', model, '--max-tokens', '6', '--seed', '3', '--system', 'be brief', '--json'];
    const r = await chat(args, 'hello there\n\nwhat is new?\n/exit\nnever read\n');
    expect(r.code, r.stderr).toBe(0);
    const turns = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(turns.map((t) => t.turn)).toEqual([1, 2]);
    expect(turns[0]).toMatchObject({
      cachedPromptTokens: 0,
      generatedTokens: expect.any(Number),
      reply: expect.any(String),
    });
    // turn 2's prompt holds turn 1's (system, user, reply) and the new message
    expect(turns[1].promptTokens).toBeGreaterThan(turns[0].promptTokens);
    expect(turns[1].cachedPromptTokens).toBeGreaterThanOrEqual(turns[0].promptTokens - 1);
    expect(turns[1].cachedPromptTokens).toBeLessThan(turns[1].promptTokens);
    // the same seed, the same conversation
    const again = await chat(args, 'hello there\nwhat is new?\n');
    expect(
      again.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).reply),
    ).toEqual(turns.map((t) => t.reply));
  });

  it('without --json: the replies on stdout, a stats line per turn on stderr', async () => {
    const r = await chat(['--model', model, '--max-tokens', '4', '--seed', '3'], 'hi\nand then?\n');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')).toHaveLength(3); // two replies, each ended by a newline
    const stats = r.stderr.split('\n').filter((l) => l.startsWith('['));
    expect(stats).toHaveLength(2);
    expect(stats[1]).toMatch(
      /^\[\d+ tokens, [\d.]+ tok\/s; prompt \d+ tokens, [1-9]\d* from the prompt cache; first token \d+ ms\]$/,
    );
  });

  it('bad input: no tokenizer, bad flags, no model', async () => {
    const nt = await chat(['--model', noTokenizer], 'hi\n');
    expect(nt.code).toBe(1);
    expect(nt.stderr).toMatch(/error \[Tokenization\/TOKENIZER_MISSING\]/);
    const bad = await chat(['--model', model, '--max-tokens', '0'], '');
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringMatching(/BAD_FLAG.*--max-tokens/)]);
    const none = await chat([], '');
    expect(none.stderr).toMatch(/MISSING_FLAG/);
  });
});
