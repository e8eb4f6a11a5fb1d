// The seed's three examples, written against 'bitnet-edge', run as a user would run them.
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { synthBytes } from '../helpers/models.ts';

const run = promisify(execFile);
let model: string;
beforeAll(async () => {
  model = join(await mkdtemp(join(tmpdir(), 'bitnet-ex-')), 'm.gguf');
  await writeFile(model, await synthBytes({ qtype: 'i2_s', seed: 8, arch: 'bitnet-b1.58' }));
});
// The sources, through the package's own export condition (lib/, what `node examples/…` resolves
// to in a checkout, is the package build's, and test/e2e/package.test.ts covers it).
const ex = (name: string) =>
  run(process.execPath, ['--conditions=bitnet-edge-source', `examples/${name}.ts`, model], { cwd: process.cwd() });

describe('seed examples', () => {
  it('basic generation', async () => {
    const { stdout } = await ex('basic-generation');
    expect(stdout).toMatch(/^Generated: /);
    expect(stdout).toMatch(/tokens at \d+\.\d tok\/s/);
  });
  it('streaming', async () => {
    const { stdout } = await ex('streaming');
    expect(stdout).toContain('stream equals generate: true');
  });
  it('custom device selection', async () => {
    const { stdout } = await ex('custom-device');
    expect(stdout).toContain('available devices: cpu');
    expect(stdout).toContain('cuda:0 unavailable (DEVICE_UNAVAILABLE); using the CPU');
    expect(stdout).toContain('ran on: cpu');
  });
});
