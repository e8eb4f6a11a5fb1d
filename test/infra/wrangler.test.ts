// wrangler.toml, as wrangler itself reads it: `wrangler deploy --dry-run` (offline, no Cloudflare
// login) for the local Worker and the dev and prod environments. It runs the [build] command
// (the esbuild Worker bundle) and lists the bindings each environment would deploy with.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, repoRoot, tempDirFor } from './synth.ts';

afterAll(cleanup);

function dryRun(env?: string): { status: number | null; out: string; bindings: Map<string, string> } {
  const outdir = tempDirFor('bitnet-wrangler-');
  const r = spawnSync(
    process.execPath,
    [
      join(repoRoot, 'node_modules/wrangler/bin/wrangler.js'),
      'deploy',
      '--dry-run',
      '--outdir',
      outdir,
      ...(env ? ['--env', env] : []),
    ],
    {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60_000,
      env: {
        ...process.env,
        // The [build] command runs `node`: this Node (22), whatever the PATH holds.
        PATH: `${dirname(process.execPath)}:${process.env.PATH}`,
        WRANGLER_SEND_METRICS: 'false',
        WRANGLER_HIDE_BANNER: 'true',
        NO_COLOR: '1',
      },
    },
  );
  const out = `${r.stdout}${r.stderr}`;
  // "env.NAME (value)   Resource" rows of the bindings table.
  const bindings = new Map<string, string>();
  for (const m of out.matchAll(/^env\.(\w+) \((.*?)\)\s+(R2 Bucket|Environment Variable)\s*$/gm))
    bindings.set(m[1], m[3] === 'R2 Bucket' ? `r2:${m[2]}` : JSON.parse(m[2]));
  return { status: r.status, out, bindings };
}

/** The vars and bindings the Worker adapter reads (its WorkerEnv interface). */
function workerEnvKeys(): string[] {
  const src = readFileSync(join(repoRoot, 'src/adapters/cloudflare.ts'), 'utf8');
  const body = /export interface WorkerEnv \{([\s\S]*?)\n\}/.exec(src)![1];
  return [...body.matchAll(/^\s+(\w+)\??:/gm)].map((m) => m[1]);
}

const THRESHOLDS = ['EDGE_MAX_TOKENS', 'MEMORY_BUDGET_BYTES', 'MAX_CONCURRENT', 'MAX_QUEUE'];
const SECRETS = ['BITNET_API_KEYS', 'GPU_API_KEY'];

describe('wrangler deploy --dry-run', () => {
  it('the local Worker (top level) still builds and binds R2', () => {
    const r = dryRun();
    expect(r.status, r.out).toBe(0);
    expect(r.bindings.get('WEIGHTS')).toBe('r2:bitnet-weights');
  });

  for (const env of ['dev', 'prod'])
    it(`--env ${env}: R2 weights, the GPU endpoint URL and every routing threshold; secrets only declared`, () => {
      const r = dryRun(env);
      expect(r.status, r.out).toBe(0);
      expect(r.out).toMatch(/--dry-run: exiting now/);
      expect(r.bindings.get('WEIGHTS')).toBe(`r2:bitnet-weights-${env}`);
      for (const k of ['MODEL_KEY', 'MODEL_ID', 'GPU_URL', ...THRESHOLDS]) expect(r.bindings.has(k), k).toBe(true);
      for (const k of THRESHOLDS) expect(r.bindings.get(k), k).toMatch(/^\d+$/);
      // Every binding is one the adapter reads; secrets are never deployed from the file.
      const known = workerEnvKeys();
      for (const k of r.bindings.keys()) expect(known, k).toContain(k);
      for (const k of [...SECRETS, 'ALLOW_UNAUTHENTICATED']) expect(r.bindings.has(k), k).toBe(false);
    });

  it('wrangler.toml declares the secrets for prod and says how to set them', () => {
    const toml = readFileSync(join(repoRoot, 'wrangler.toml'), 'utf8');
    expect(toml).toMatch(/\[env\.prod\.secrets\]\s*\nrequired = \["BITNET_API_KEYS", "GPU_API_KEY"\]/);
    for (const k of SECRETS) {
      expect(toml).toContain(`npx wrangler secret put ${k} --env prod`);
      expect(toml).not.toMatch(new RegExp(`^\\s*${k}\\s*=`, 'm'));
    }
    expect(toml).not.toMatch(/^\s*ALLOW_UNAUTHENTICATED\s*=/m);
  });
});
