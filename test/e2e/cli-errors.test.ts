// The `bitnet` CLI's error paths and flag handling: every failure is a typed
// `error [Kind/CODE]` (JSON on stderr with --json) and a non-zero exit, never a Node stack; every
// command takes the model locations the others take; summaries say what the files hold.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { bitnet } from '../helpers/cli.ts';

let dir: string;
let tiny: string; // I2_S, bitnet-b1.58
let tq: string; // TQ2_0, bitnet (silu)
let pack: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitnet-cli-errors-'));
  tiny = join(dir, 'tiny.gguf');
  tq = join(dir, 'tq.gguf');
  pack = join(dir, 'pack');
  expect((await bitnet('synth', '--preset', 'tiny', '--qtype', 'i2_s', '--seed', '1', '--out', tiny)).code).toBe(0);
  expect((await bitnet('synth', '--preset', 'tiny', '--qtype', 'tq2_0', '--seed', '1', '--out', tq)).code).toBe(0);
  expect((await bitnet('convert', '--model', tiny, '--out', pack, '--quiet')).code).toBe(0);
});

/** The typed error a failed command printed: its JSON under --json, else parsed from the text line. */
function typedError(
  r: { code: number; stderr: string },
  json: boolean,
): { kind: string; code: string; message: string } {
  expect(r.code, r.stderr).not.toBe(0);
  expect(r.stderr, 'no Node stack trace').not.toMatch(/^\s+at .+:\d+:\d+\)?$/m);
  if (json) return JSON.parse(r.stderr.trim().split('\n')[0]).error;
  const m = /^error \[(\w+)\/(\w+)\]: (.*)$/m.exec(r.stderr);
  expect(m, r.stderr).not.toBeNull();
  return { kind: m![1], code: m![2], message: m![3] };
}

async function expectError(args: string[], kind: string, code: string, message?: RegExp) {
  await Promise.all(
    [false, true].map(async (json) => {
      const r = await bitnet(...args, ...(json ? ['--json'] : []));
      const e = typedError(r, json);
      expect({ kind: e.kind, code: e.code }, `${args.join(' ')}: ${r.stderr}`).toEqual({ kind, code });
      // usage errors exit 2, every other error 1 (README, "The CLI")
      const usage = [
        'BAD_FLAG',
        'UNKNOWN_COMMAND',
        'MISSING_FLAG',
        'MISSING_ARGUMENT',
        'UNEXPECTED_ARGUMENT',
        'BAD_TARGET',
      ].includes(code);
      expect(r.code, args.join(' ')).toBe(usage ? 2 : 1);
      if (message) expect(e.message, args.join(' ')).toMatch(message);
    }),
  );
}

const benchFast = ['--prompt', '4', '--gen', '2', '--runs', '1', '--json'];

describe('bench', () => {
  it('a missing model is Io/FILE_NOT_FOUND, as for generate', async () => {
    const missing = join(dir, 'nope.gguf');
    await expectError(['bench', '--model', missing], 'Io', 'FILE_NOT_FOUND');
    await expectError(['bench', '--model', pathToFileURL(missing).href], 'Io', 'FILE_NOT_FOUND');
    await expectError(['generate', '--model', missing, '--prompt-ids', '1'], 'Io', 'FILE_NOT_FOUND');
  });

  it('runs a path, a file:// URL and a shard-pack directory, on wasm and reference, with type names', async () => {
    const runs: [string, string][] = [
      [tiny, 'wasm'],
      [pathToFileURL(tiny).href, 'wasm'],
      [pack, 'wasm'],
      [`${pack}/`, 'reference'],
      [join(pack, 'manifest.json'), 'reference'],
    ];
    const greedy: number[][] = [];
    for (const [model, backend] of runs) {
      const r = await bitnet('bench', '--model', model, '--backend', backend, ...benchFast);
      expect(r.code, `${model} ${backend}: ${r.stderr}`).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out).toMatchObject({
        model,
        backend,
        weightType: 36,
        weightTypeName: 'I2_S',
        headType: 1,
        headTypeName: 'F16',
      });
      expect(out.fileBytes).toBeGreaterThan(500_000);
      greedy.push(out.greedyTokens);
    }
    // The same weights wherever they come from: the same greedy tokens.
    for (const g of greedy) expect(g).toEqual(greedy[0]);
  });
});

describe('synth', () => {
  it('an --out it cannot write is Io/OUTPUT_WRITE_FAILED, and leaves no file behind', async () => {
    await expectError(
      ['synth', '--preset', 'tiny', '--qtype', 'i2_s', '--seed', '1', '--out', join(dir, 'no', 'such', 'x.gguf')],
      'Io',
      'OUTPUT_WRITE_FAILED',
      /does not exist/,
    );
    expect(existsSync(join(dir, 'no'))).toBe(false);
    const sub = join(dir, 'outdir');
    await mkdir(sub);
    for (const out of [`${sub}/`, sub]) {
      await expectError(
        ['synth', '--preset', 'tiny', '--qtype', 'i2_s', '--seed', '1', '--out', out],
        'Io',
        'OUTPUT_WRITE_FAILED',
        /is a directory/,
      );
    }
    expect(await readdir(sub)).toEqual([]);
    expect((await readdir(dir)).filter((f) => f.endsWith('.partial'))).toEqual([]);
  });

  it('--activation silu on a b1.58 arch is Config/BAD_FLAG; the summary reports what the file holds', async () => {
    const y = join(dir, 'y.gguf');
    const args = ['synth', '--preset', 'tiny', '--qtype', 'i2_s', '--seed', '1', '--out', y];
    await expectError([...args, '--activation', 'silu'], 'Config', 'BAD_FLAG', /bitnet-b1\.58.*relu2.*--arch bitnet/);
    await expectError(
      [...args, '--arch', 'bitnet-25', '--activation', 'silu'],
      'Config',
      'BAD_FLAG',
      /bitnet-25 always uses relu2/,
    );
    expect(existsSync(y)).toBe(false);

    // relu2 is what b1.58 runs anyway: accepted. Without --activation the summary still says relu2.
    for (const extra of [['--activation', 'relu2'], []]) {
      const r = await bitnet(...args, ...extra, '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ arch: 'bitnet-b1.58', activation: 'relu2' });
    }
    // Arch bitnet: the activation is written to the file, default silu.
    const b = join(dir, 'b.gguf');
    const s = await bitnet('synth', '--preset', 'tiny', '--qtype', 'tq2_0', '--seed', '1', '--out', b, '--json');
    expect(JSON.parse(s.stdout)).toMatchObject({ arch: 'bitnet', activation: 'silu' });
    const info = JSON.parse((await bitnet('inspect', b, '--json')).stdout);
    expect(info.metadata['bitnet.hidden_activation']).toBe('silu');
    const r = await bitnet('synth', '--preset', 'tiny', '--qtype', 'tq2_0', '--activation', 'relu2', '--seed', '1');
    expect(r.code).toBe(2); // --out missing: MISSING_FLAG, a usage error
    expect(r.stderr).toMatch(/Config\/MISSING_FLAG/);
  });
});

describe('convert', () => {
  it('an --out that is a file (or under one) is Io/OUTPUT_WRITE_FAILED', async () => {
    await expectError(
      ['convert', '--model', tiny, '--out', tiny, '--quiet'],
      'Io',
      'OUTPUT_WRITE_FAILED',
      /not a directory/,
    );
    await expectError(
      ['convert', '--model', tiny, '--out', join(tiny, 'sub'), '--quiet'],
      'Io',
      'OUTPUT_WRITE_FAILED',
      /not a directory/,
    );
  });

  it('converting into an earlier, larger pack leaves exactly the new pack (and the user files)', async () => {
    const out = join(dir, 'repack');
    expect((await bitnet('convert', '--model', tiny, '--out', out, '--shard-size', '64KiB', '--quiet')).code).toBe(0);
    const before = (await readdir(out)).filter((f) => f.startsWith('shard-'));
    expect(before.length).toBeGreaterThan(2);
    await writeFile(join(out, 'README.txt'), 'mine');
    await writeFile(join(out, 'shard-00099.bin.partial'), 'left by an interrupted run');
    const r = await bitnet('convert', '--model', tiny, '--out', out, '--json', '--quiet');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).shards).toBe(1);
    expect((await readdir(out)).sort()).toEqual(['README.txt', 'manifest.json', 'shard-00000.bin']);
    const l = await bitnet('logits', '--model', out, '--prompt-ids', '1,2', '--json');
    const g = await bitnet('logits', '--model', tiny, '--prompt-ids', '1,2', '--json');
    expect(JSON.parse(l.stdout)).toEqual(JSON.parse(g.stdout));
  });

  it('a TQ2_0 → I2_S repack says that the numerics change (stderr, --json notes; not with --quiet)', async () => {
    const out = join(dir, 'tqpack');
    const r = await bitnet('convert', '--model', tq, '--out', out, '--json');
    expect(r.code, r.stderr).toBe(0);
    const notes: string[] = JSON.parse(r.stdout).notes;
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(/TQ2_0 .*repacked to I2_S.*weights are exact.*logits differ/);
    expect(r.stderr).toContain(`note: ${notes[0]}`);
    const q = await bitnet('convert', '--model', tq, '--out', out, '--quiet');
    expect(q.code).toBe(0);
    expect(q.stderr).toBe('');
    // TL layouts keep TQ2_0 and its numerics: no note. I2_S input: nothing repacked, no note.
    for (const [model, layout] of [
      [tq, 'tl2'],
      [tiny, 'i2s'],
    ]) {
      const t = await bitnet(
        'convert',
        '--model',
        model,
        '--out',
        join(dir, `nonote-${layout}`),
        '--layout',
        layout,
        '--json',
      );
      expect(JSON.parse(t.stdout).notes).toEqual([]);
      expect(t.stderr).not.toMatch(/^note:/m);
    }
  });
});

describe('logits', () => {
  it('validates --backend before anything else, --activations q8k included', async () => {
    for (const extra of [[], ['--activations', 'q8k'], ['--activations', 'per-token']]) {
      await expectError(
        ['logits', '--model', join(dir, 'missing.gguf'), '--prompt-ids', '1', '--backend', 'bogus', ...extra],
        'Config',
        'BAD_FLAG',
        /--backend must be one of/,
      );
    }
    await expectError(
      ['logits', '--model', tq, '--prompt-ids', '1', '--activations', 'q8k', '--backend', 'wasm'],
      'Config',
      'BAD_FLAG',
      /reference forward pass only/,
    );
    const ok = await bitnet(
      'logits',
      '--model',
      tq,
      '--prompt-ids',
      '1',
      '--activations',
      'q8k',
      '--backend',
      'reference',
    );
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).logits[0]).toHaveLength(512);
  });

  it('NaN logits are Model/LOGITS_NAN, as generate reports them, not JSON nulls', async () => {
    const bytes = new Uint8Array(await readFile(tiny));
    const info = JSON.parse((await bitnet('inspect', tiny, '--json')).stdout);
    const embd = info.tensors.find((t: { name: string }) => t.name === 'token_embd.weight');
    bytes.fill(0xff, embd.offset, embd.offset + 64); // f16 0xFFFF is NaN: token 0's embedding and its head row
    const nan = join(dir, 'nan.gguf');
    await writeFile(nan, bytes);
    for (const backend of ['wasm', 'reference']) {
      await expectError(
        ['logits', '--model', nan, '--prompt-ids', '0,1', '--backend', backend],
        'Model',
        'LOGITS_NAN',
        /NaN/,
      );
    }
    await expectError(['generate', '--model', nan, '--prompt-ids', '0,1', '--max-tokens', '2'], 'Model', 'LOGITS_NAN');
  });
});

/** Every command of the CLI (src/cli/main.ts). */
const COMMANDS = [
  'generate',
  'chat',
  'logits',
  'perplexity',
  'synth',
  'inspect',
  'tokenize',
  'convert',
  'pull',
  'cache',
  'bench',
  'serve',
];

describe('usage and flags', () => {
  it('--help / -h on every subcommand prints its usage and exits 0', async () => {
    await Promise.all(
      COMMANDS.flatMap((cmd) =>
        ['--help', '-h'].map(async (h) => {
          const r = await bitnet(cmd, h);
          expect(r.code, `${cmd} ${h}: ${r.stderr}`).toBe(0);
          expect(r.stdout, cmd).toMatch(new RegExp(`^bitnet ${cmd} `));
        }),
      ),
    );
    const g = await bitnet('generate', '--model', tiny, '--help');
    expect(g.stdout).toMatch(/--backend reference\|wasm\|cuda/);
    expect(g.stdout).toMatch(/--pre-tokenizer default\|llama-bpe/);
    expect(g.stdout).toMatch(/--keep-special/);
  });

  it('the overall usage lists every command', async () => {
    const r = await bitnet('--help');
    expect(r.code).toBe(0);
    for (const cmd of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^  ${cmd} `, 'm'));
  });

  it('parse errors are Config/BAD_FLAG (JSON under --json), exit 2', async () => {
    const cases = [
      ['generate', '--model', tiny, '--prompt-ids', '1', '--bogus'],
      ['generate', '--model', tiny, '--prompt-ids'],
      ['inspect', tiny, '--frob'],
      ['serve', '--no-such-flag'],
    ];
    await Promise.all(
      cases.flatMap((args) =>
        [false, true].map(async (json) => {
          const r = await bitnet(...args, ...(json ? ['--json'] : []));
          expect(r.code, r.stderr).toBe(2);
          expect(typedError(r, json)).toMatchObject({ kind: 'Config', code: 'BAD_FLAG' });
        }),
      ),
    );
    const u = await bitnet('frobnicate', '--json');
    expect(u.code).toBe(2);
    expect(JSON.parse(u.stderr).error).toMatchObject({ kind: 'Config', code: 'UNKNOWN_COMMAND' });
  });

  it('negative values reach the flag validation and its message', async () => {
    const g = ['generate', '--model', tiny, '--prompt-ids', '1'];
    await Promise.all([
      expectError([...g, '--max-tokens', '-1'], 'Config', 'BAD_FLAG', /--max-tokens must be an integer >= 1, got "-1"/),
      expectError(
        [...g, '--seed', '-5'],
        'Config',
        'BAD_FLAG',
        /--seed must be a non-negative integer below 2\^64, got "-5"/,
      ),
      expectError([...g, '--seed', '18446744073709551616'], 'Config', 'BAD_FLAG', /below 2\^64/),
      expectError([...g, '--seed', '18446744073709551615', '--max-tokens', '0'], 'Config', 'BAD_FLAG', /--max-tokens/),
      // missing pieces are usage errors too (exit 2), and say what is missing
      expectError(['inspect'], 'Config', 'MISSING_ARGUMENT', /^missing FILE$/),
      expectError(
        ['inspect', tiny, 'extra.gguf'],
        'Config',
        'UNEXPECTED_ARGUMENT',
        /^unexpected argument "extra.gguf"$/,
      ),
      expectError(['generate', '--prompt', 'hi'], 'Config', 'MISSING_FLAG', /--model is required/),
      expectError(['embed', '--model', tiny], 'Config', 'MISSING_FLAG', /^nothing to embed: give --text/),
      expectError(['embed', '--model', tiny, '--text', 'a', '--prompt-ids', '1'], 'Config', 'BAD_FLAG', /not both/),
      expectError([...g, '--temperature', '-0.5'], 'Config', 'BAD_FLAG', /--temperature must be a number >= 0/),
      expectError(['bench', '--model', tiny, '--threads', '-2'], 'Config', 'BAD_FLAG', /--threads must be/),
    ]);
    // a shard pack given to inspect (its directory or its manifest): the error says what it is
    const pack = join(dir, 'a-pack');
    await mkdir(pack, { recursive: true });
    await writeFile(join(pack, 'manifest.json'), '{"format": "bitnet-shard-pack"}');
    await Promise.all([
      expectError(
        ['inspect', pack],
        'Io',
        'NOT_A_FILE',
        /is not a regular file: this is a shard pack; inspect reads GGUF/,
      ),
      expectError(
        ['inspect', join(pack, 'manifest.json')],
        'Model',
        'GGUF_BAD_MAGIC',
        /is not a GGUF file .*: this is a shard pack; inspect reads GGUF files/,
      ),
    ]);
    // A text value that starts with a digit after the dash is just text.
    const t = await bitnet('generate', '--model', tiny, '--prompt', '-1 is a number', '--max-tokens', '1', '--json');
    expect(t.code, t.stderr).toBe(0);
  });

  it('generate: --logprobs, --logit-bias and the penalties, and their bad values', async () => {
    const g = ['generate', '--model', tiny, '--prompt-ids', '1,2', '--max-tokens', '3', '--temperature', '0'];
    const ok = await bitnet(...g, '--json', '--logprobs', '2', '--logit-bias', '65=100', '--presence-penalty', '-1');
    expect(ok.code, ok.stderr).toBe(0);
    const out = JSON.parse(ok.stdout);
    expect(out.tokenIds).toEqual([65, 65, 65]);
    expect(out.logprobs).toHaveLength(3);
    expect(out.logprobs[0]).toMatchObject({ id: 65, token: 'A', logprob: expect.any(Number) });
    expect(out.logprobs[0].top).toHaveLength(2);
    const plain = JSON.parse((await bitnet(...g, '--json')).stdout);
    expect(plain).not.toHaveProperty('logprobs');
    const noJson = await bitnet(...g, '--logprobs', '2'); // (expectError adds --json, which makes it valid)
    expect([noJson.code, noJson.stderr]).toEqual([2, expect.stringMatching(/BAD_FLAG.*--logprobs needs --json/)]);
    await Promise.all([
      expectError([...g, '--logprobs', '21'], 'Config', 'BAD_FLAG', /--logprobs must be an integer/),
      ...['65', '65=', 'x=1', '65=101', '65=1e2'].map((v) =>
        expectError([...g, '--logit-bias', v], 'Config', 'BAD_FLAG', /--logit-bias takes TOKEN_ID=BIAS/),
      ),
      expectError([...g, '--logit-bias', '99999=1'], 'Config', 'SAMPLER_BAD_LOGIT_BIAS', /not a token id/),
      expectError([...g, '--frequency-penalty', '3'], 'Config', 'BAD_FLAG', /--frequency-penalty must be/),
      expectError([...g, '--min-p', '2'], 'Config', 'BAD_FLAG', /--min-p must be a number >= 0 <= 1/),
    ]);
  });

  it('perplexity: text, file or ids; progress on stderr, PPL on stdout; its bad input', async () => {
    const text = 'the quick brown fox jumps over the lazy dog; '.repeat(8);
    const file = join(dir, 'ppl.txt');
    await writeFile(file, text);
    const j = await bitnet('perplexity', '--model', tiny, '--file', file, '--ctx', '32', '--chunks', '2', '--json');
    expect(j.code, j.stderr).toBe(0);
    const out = JSON.parse(j.stdout);
    expect(out).toMatchObject({ chunks: 2, chunkSize: 32, tokensScored: 30, backend: expect.any(String) });
    expect(out.ppl).toBeCloseTo(Math.exp(out.meanNll), 10);
    expect(j.stderr).toMatch(/^\[1\][\d.]+,\[2\][\d.]+$/m);
    const t = await bitnet('perplexity', '--model', tiny, '--text', text, '--ctx', '32', '--chunks', '2');
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toBe(`PPL = ${out.ppl.toFixed(4)} +/- ${out.pplError.toFixed(5)}\n`);
    const p = ['perplexity', '--model', tiny];
    await Promise.all([
      expectError([...p, '--text', 'a', '--file', file], 'Config', 'BAD_FLAG', /exactly one of --file, --text/),
      expectError([...p], 'Config', 'BAD_FLAG', /exactly one of/),
      expectError([...p, '--text', text, '--ctx', '3'], 'Config', 'BAD_FLAG', /--ctx must be an integer >= 4/),
      expectError([...p, '--text', text, '--ctx', '100000'], 'Config', 'INVALID_PERPLEXITY_CONFIG', /context/),
      expectError([...p, '--text', 'too short', '--ctx', '32'], 'Config', 'TEXT_TOO_SHORT'),
      expectError([...p, '--file', join(dir, 'nope.txt')], 'Io', 'INPUT_UNREADABLE'),
      expectError([...p, '--prompt-ids', '1,99999', '--ctx', '4'], 'Config', 'BAD_TOKEN'),
    ]);
  });

  it('numeric flags take plain decimals only; id lists refuse empty entries', async () => {
    const g = ['generate', '--model', tiny, '--prompt-ids', '1'];
    await Promise.all([
      ...['0x10', '1e2', ' 5', '5 ', '', '1.5', 'Infinity', '99999999999999999999'].map((v) =>
        expectError([...g, '--max-tokens', v], 'Config', 'BAD_FLAG', /--max-tokens must be an integer/),
      ),
      ...['1e-1', '0x1', ' 0.5', '.', '-'].map((v) =>
        expectError([...g, '--temperature', v], 'Config', 'BAD_FLAG', /--temperature must be a number/),
      ),
      ...['1,,2', '1,2,', ',1', ','].flatMap((ids) => [
        expectError(['generate', '--model', tiny, '--prompt-ids', ids], 'Config', 'BAD_FLAG', /empty/),
        expectError(['logits', '--model', tiny, '--prompt-ids', ids], 'Config', 'BAD_FLAG', /empty/),
      ]),
    ]);
    // Plain decimals (and the documented size suffixes) still work.
    const ok = await bitnet(
      ...g,
      '--max-tokens',
      '2',
      '--temperature',
      '0.5',
      '--top-p',
      '.9',
      '--seed',
      '3',
      '--json',
    );
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).generatedTokens).toBe(2);
    const c = await bitnet('convert', '--model', tiny, '--out', join(dir, 'sized'), '--shard-size', '1MiB', '--quiet');
    expect(c.code, c.stderr).toBe(0);
  });
});

describe('truncated files and s3 credentials', () => {
  it('a GGUF cut after its header is GGUF_TRUNCATED, not an absurd count', async () => {
    const cut = join(dir, 'cut24.gguf');
    await writeFile(cut, (await readFile(tiny)).subarray(0, 24));
    await expectError(['inspect', cut], 'Model', 'GGUF_TRUNCATED', /truncated/);
    await expectError(['generate', '--model', cut, '--prompt-ids', '1'], 'Model', 'GGUF_TRUNCATED');
    await expectError(['bench', '--model', cut], 'Model', 'GGUF_TRUNCATED');
  });

  it('s3:// without any credentials fails at once with Io/S3_NO_CREDENTIALS', async () => {
    // A clean environment: no AWS variables, no config files, no instance metadata service.
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      AWS_CONFIG_FILE: join(dir, 'none'),
      AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_REGION: 'us-east-1',
    };
    const t0 = performance.now();
    let r: { code: number; stderr: string };
    try {
      await promisify(execFile)(process.execPath, ['bin/bitnet.js', 'inspect', 's3://bucket/model.gguf', '--json'], {
        env,
      });
      r = { code: 0, stderr: '' };
    } catch (e) {
      r = e as { code: number; stderr: string };
    }
    const err = typedError(r, true) as { kind: string; code: string; details?: unknown };
    expect(err).toMatchObject({ kind: 'Io', code: 'S3_NO_CREDENTIALS' });
    expect(JSON.stringify(err)).not.toMatch(/RETRIES_EXHAUSTED/);
    expect(performance.now() - t0).toBeLessThan(10_000);
  });
});
