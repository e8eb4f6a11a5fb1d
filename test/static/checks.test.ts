// Static checks run by `npm test`, so CI fails on a type or lint error the way it fails on a test:
// tsc over the project (src, bin, test, scripts, examples, bench, infra) and the GPU server
// (gpu-lambda/tsconfig.json), and biome over the files biome.json lists. The three start at once
// (each is single-threaded and CI has 2 cores); each test awaits its own.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';

function run(args: string[]): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    c.on('error', (e) => resolve({ status: null, out: String(e) }));
    c.on('close', (status) => resolve({ status, out: `${out}\n${err}` }));
  });
}

describe('static checks', () => {
  const projects = ['tsconfig.json', 'gpu-lambda/tsconfig.json'];
  const tsc = projects.map((p) => run(['node_modules/typescript/bin/tsc', '--noEmit', '-p', p]));
  const biome = run(['node_modules/@biomejs/biome/bin/biome', 'check', '.', '--error-on-warnings']);

  projects.forEach((project, i) => {
    it(`tsc --noEmit -p ${project}`, async () => {
      const r = await tsc[i];
      expect(r.out.trim(), r.out).toBe('');
      expect(r.status).toBe(0);
    }, 300_000);
  });

  it('biome check', async () => {
    const r = await biome;
    expect(r.status, r.out).toBe(0);
  }, 300_000);
});
