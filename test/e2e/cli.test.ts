import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { bitnet } from '../helpers/cli.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitnet-cli-'));
});

describe('bitnet CLI', () => {
  it('synth writes models that inspect, logits and generate read', async () => {
    const f = join(dir, 'tiny.gguf');
    const s = await bitnet('synth', '--preset', 'tiny', '--qtype', 'i2_s', '--seed', '3', '--out', f, '--json');
    expect(s.code).toBe(0);
    expect(JSON.parse(s.stdout)).toMatchObject({ out: f, arch: 'bitnet-b1.58', qtype: 'i2_s' });

    const i = await bitnet('inspect', f, '--json');
    const info = JSON.parse(i.stdout);
    expect(info.metadata['general.architecture']).toBe('bitnet-b1.58');
    expect(info.tensors.find((t: { name: string }) => t.name === 'blk.0.attn_q.weight').type).toBe('I2_S');

    const l = await bitnet('logits', '--model', f, '--prompt-ids', '5,6,7', '--json');
    const { logits } = JSON.parse(l.stdout);
    expect(logits).toHaveLength(3);
    expect(logits[0]).toHaveLength(512);

    const g = await bitnet(
      'generate',
      '--model',
      f,
      '--prompt-ids',
      '5,6,7',
      '--max-tokens',
      '6',
      '--temperature',
      '0',
      '--json',
    );
    const out = JSON.parse(g.stdout);
    expect(Object.keys(out)).toEqual(
      expect.arrayContaining(['text', 'tokenIds', 'promptTokens', 'generatedTokens', 'timings']),
    );
    expect(out.promptTokens).toBe(3);
    expect(out.generatedTokens).toBe(6);
    // greedy first token = argmax of the last logits row
    const last: number[] = logits[2];
    expect(out.tokenIds[0]).toBe(last.indexOf(Math.max(...last)));

    const t = await bitnet('generate', '--model', f, '--prompt', 'hello', '--max-tokens', '4', '--seed', '1');
    expect(t.code).toBe(0);
    expect(t.stderr).toContain('random weights');

    // --parse-special: "<|eot_id|>" in --prompt is the one token (llama-cli's -p), else plain text
    const ps = async (...flags: string[]) =>
      JSON.parse(
        (await bitnet('generate', '--model', f, '--prompt', 'hi<|eot_id|>', '--max-tokens', '1', '--json', ...flags))
          .stdout,
      ).promptTokens;
    const plainCount = await ps();
    const parsedCount = await ps('--parse-special');
    expect(parsedCount).toBeLessThan(plainCount);
    const tk = JSON.parse(
      (await bitnet('tokenize', '--model', f, '--text', 'hi<|eot_id|>', '--bos', '--parse-special', '--json')).stdout,
    );
    expect(parsedCount).toBe(tk.length); // tokenize --json prints the id array
  });

  it("embed: the API's embeddings per input (--json), plain lines without; bad flags fail before the model opens", async () => {
    const f = join(dir, 'embed.gguf');
    expect((await bitnet('synth', '--preset', 'tiny', '--qtype', 'tq2_0', '--seed', '4', '--out', f)).code).toBe(0);
    const j = await bitnet('embed', '--model', f, '--text', 'hello world', '--text', 'a dog', '--json');
    expect(j.code, j.stderr).toBe(0);
    const out = JSON.parse(j.stdout);
    expect(out).toMatchObject({ dimensions: 256, pooling: 'mean', normalized: true });
    expect(out.embeddings.map((e: { index: number }) => e.index)).toEqual([0, 1]);
    const { BitNetModel } = await import('../../src/api/bitnet-model.ts');
    const model = await BitNetModel.fromFile(f);
    expect(out.embeddings[0].embedding).toEqual(Array.from(await model.embed('hello world')));
    expect(out.embeddings[1].embedding).toEqual(Array.from(await model.embed('a dog')));
    // ids, the last position, not normalized; plain output: one line of numbers per input
    const ids = await bitnet('embed', '--model', f, '--prompt-ids', '5,6,7', '--pooling', 'last', '--no-normalize');
    expect(ids.code, ids.stderr).toBe(0);
    const line = ids.stdout.trim().split('\n');
    expect(line).toHaveLength(1);
    expect(line[0].split(' ').map(Number)).toEqual(
      Array.from(await model.embed({ ids: [5, 6, 7] }, { pooling: 'last', normalize: false })),
    );
    for (const [flags, msg] of [
      [['--model', f], /--text .* or --prompt-ids/],
      [['--model', f, '--text', 'x', '--prompt-ids', '1'], /not both/],
      [['--model', f, '--text', 'x', '--pooling', 'max'], /--pooling must be one of mean, last/],
      [['--model', f, '--prompt-ids', '1,99999'], /BAD_TOKEN/],
    ] as const) {
      const r = await bitnet('embed', ...flags);
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(msg);
    }
  });

  it('the same seed gives the same ternary weights in every qtype', async () => {
    const a = join(dir, 'a.gguf');
    const b = join(dir, 'b.gguf');
    await bitnet('synth', '--preset', 'tiny', '--qtype', 'tq2_0', '--activation', 'relu2', '--seed', '11', '--out', a);
    await bitnet('synth', '--preset', 'tiny', '--qtype', 'tq1_0', '--activation', 'relu2', '--seed', '11', '--out', b);
    const la = JSON.parse((await bitnet('logits', '--model', a, '--prompt-ids', '1,2', '--json')).stdout);
    const lb = JSON.parse((await bitnet('logits', '--model', b, '--prompt-ids', '1,2', '--json')).stdout);
    expect(lb).toEqual(la);
  });

  it('bad input gives clear typed errors and a non-zero exit', async () => {
    const f = join(dir, 'tiny.gguf');
    const cases: [string[], RegExp][] = [
      [['generate', '--model', join(dir, 'missing.gguf'), '--prompt', 'x'], /FILE_NOT_FOUND/],
      [['generate', '--model', f], /exactly one of --prompt and --prompt-ids/],
      [['logits', '--model', f, '--prompt-ids', '1,x'], /not a token id/],
      [['logits', '--model', f, '--prompt-ids', '99999'], /outside the vocabulary/],
      [['generate', '--model', f, '--prompt', 'x', '--temperature', 'hot'], /--temperature must be/],
      [['synth', '--preset', 'tiny', '--qtype', 'q4_0', '--seed', '1', '--out', f], /--qtype must be one of/],
      [
        [
          'synth',
          '--hidden',
          '100',
          '--layers',
          '1',
          '--heads',
          '2',
          '--kv-heads',
          '1',
          '--ffn',
          '256',
          '--vocab',
          '300',
          '--ctx',
          '64',
          '--qtype',
          'tq2_0',
          '--seed',
          '1',
          '--out',
          join(dir, 'x.gguf'),
        ],
        /multiples of 256/,
      ],
      [['inspect', join(dir, 'tiny.gguf.partial')], /FILE_NOT_FOUND/],
      [['frobnicate'], /unknown command/],
    ];
    for (const [args, re] of cases) {
      const r = await bitnet(...args);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr, args.join(' ')).toMatch(re);
    }
    const j = await bitnet('logits', '--model', f, '--prompt-ids', '99999', '--json');
    expect(JSON.parse(j.stderr).error).toMatchObject({ kind: 'Config', code: 'BAD_TOKEN' });
  });
});
