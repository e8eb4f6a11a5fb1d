// Static checks run by `npm test`, so CI fails on a type or lint error the way it fails on a test:
// tsc over the project (src, bin, test, scripts, examples, bench, infra) and the GPU server
// (gpu-lambda/tsconfig.json), and biome over the files biome.json lists.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

function run(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 16 << 20 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe('static checks', () => {
  for (const project of ['tsconfig.json', 'gpu-lambda/tsconfig.json']) {
    it(`tsc --noEmit -p ${project}`, () => {
      const r = run(['node_modules/typescript/bin/tsc', '--noEmit', '-p', project]);
      expect(r.out.trim(), r.out).toBe('');
      expect(r.status).toBe(0);
    }, 300_000);
  }

  it('biome check', () => {
    const r = run(['node_modules/@biomejs/biome/bin/biome', 'check', '.', '--error-on-warnings']);
    expect(r.status, r.out).toBe(0);
  }, 120_000);
});
