// A greedy 32-token generation from a 2B-4T-shaped I2_S file (1.18 GB, Microsoft's tensor layout)
// runs from the CLI with peak RSS under 1.3× the file size: ternary weights stay packed (2 bits),
// nothing is expanded to f32. No timing is asserted; the wall time is printed.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const exec = promisify(execFile);
let dir = '';
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('2B-4T shape from the CLI', () => {
  it('generates 32 greedy tokens with peak RSS < 1.3× the file size', async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitnet-2b4t-'));
    const file = join(dir, '2b4t-i2s.gguf');
    const t0 = performance.now();
    await exec(process.execPath, [
      'bin/bitnet.js',
      'synth',
      '--preset',
      '2b-4t',
      '--qtype',
      'i2_s',
      '--seed',
      '42',
      '--out',
      file,
    ]);
    const t1 = performance.now();
    const size = (await stat(file)).size;
    const { stdout } = await exec(
      process.execPath,
      [
        'bin/bitnet.js',
        'generate',
        '--model',
        file,
        '--prompt-ids',
        '128000,791,6864,315',
        '--max-tokens',
        '32',
        '--temperature',
        '0',
        '--json',
      ],
      { maxBuffer: 1 << 20 },
    );
    const out = JSON.parse(stdout);
    const ratio = out.peakRssBytes / size;
    console.log(
      `2B-4T I2_S: file ${(size / 1e9).toFixed(3)} GB, peak RSS ${(out.peakRssBytes / 1e9).toFixed(3)} GB (${ratio.toFixed(3)}×), ` +
        `backend ${out.backend}, ${out.generatedTokens} tokens, decode ${out.timings.tokensPerSecond.toFixed(2)} tok/s, ` +
        `synth ${((t1 - t0) / 1000).toFixed(0)} s, generate ${((performance.now() - t1) / 1000).toFixed(0)} s`,
    );
    expect(out.generatedTokens).toBe(32);
    expect(out.tokenIds).toHaveLength(32);
    expect(ratio).toBeLessThan(1.3);
  }, 1_200_000);
});
