// keepYoungGenerationSmall (src/adapters/node-heap.ts): after it, a burst of allocation that
// survives scavenges (what building a tokenizer does) leaves V8's new space at its initial size;
// with BITNET_V8_YOUNG_GEN=default the new space grows as V8 likes. Each case is a fresh process.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const PROBE = `
import v8 from 'node:v8';
const { keepYoungGenerationSmall } = await import('./src/adapters/node-heap.ts');
const applied = keepYoungGenerationSmall();
const keep = [];
for (let i = 0; i < 400000; i++) keep.push('token-' + i + '-' + (i * 7919).toString(36));
const ns = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
console.log(JSON.stringify({ applied, newSpace: ns.space_size, kept: keep.length }));
`;

function probe(env: Record<string, string>): { applied: boolean; newSpace: number } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', PROBE], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

describe('keepYoungGenerationSmall', () => {
  it('holds the new space at its initial size; BITNET_V8_YOUNG_GEN=default opts out', () => {
    const small = probe({});
    const grown = probe({ BITNET_V8_YOUNG_GEN: 'default' });
    expect(small.applied).toBe(true);
    expect(grown.applied).toBe(false);
    expect(small.newSpace).toBeLessThanOrEqual(2 * 2 ** 20);
    expect(grown.newSpace).toBeGreaterThan(small.newSpace);
  }, 60_000);
});
