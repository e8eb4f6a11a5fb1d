// Failed loads leave nothing behind: no open file descriptor after a corrupt or truncated GGUF
// (the wasm path opens the file itself, node-open.ts), and a file cut short says so.
import { readdirSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { BitNetError } from '../../src/errors.ts';
import { readGGUF } from '../../src/gguf/reader.ts';
import { openForWasm } from '../../src/kernels/wasm/node-open.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { synthBytes } from '../helpers/models.ts';

const FD_DIR = '/proc/self/fd';
const openFds = () => readdirSync(FD_DIR).length;
const canCount = (() => {
  try {
    return readdirSync(FD_DIR).length > 0;
  } catch {
    return false;
  }
})();

let model: Uint8Array;
let dir: string;
beforeAll(async () => {
  model = await synthBytes({ qtype: 'i2_s', seed: 2, arch: 'bitnet-b1.58' });
  dir = await mkdtemp(join(tmpdir(), 'bitnet-load-fail-'));
});

async function expectTyped(p: Promise<unknown>, ...codes: string[]) {
  await expect(p).rejects.toSatisfy((e: unknown) => e instanceof BitNetError && codes.includes(e.code));
}

describe('failed loads close their files', () => {
  it.skipIf(!canCount)(
    '50 failed loads of truncated files (wasm path and openForWasm) open no descriptor',
    async () => {
      const cuts = [24, 3000, model.length - 10];
      const files: string[] = [];
      for (const n of cuts) {
        const f = join(dir, `cut-${n}.gguf`);
        await writeFile(f, model.subarray(0, n));
        files.push(f);
      }
      // Warm up once (lazy imports, the wasm module) so only leaks count.
      await expect(BitNetModel.fromFile(files[0])).rejects.toBeInstanceOf(BitNetError);
      await expect(openForWasm(files[0])).rejects.toBeInstanceOf(BitNetError);
      const before = openFds();
      for (let i = 0; i < 50; i++) {
        const f = files[i % files.length];
        // The default backend (wasm) tries openForWasm first, then the ordinary loader reports the error.
        await expectTyped(BitNetModel.fromFile(f), 'GGUF_TRUNCATED', 'GGUF_OFFSET_PAST_EOF');
        await expectTyped(openForWasm(f), 'GGUF_TRUNCATED', 'GGUF_OFFSET_PAST_EOF');
      }
      expect(openFds()).toBe(before);
    },
  );
});

describe('a truncated header is reported as truncation', () => {
  it('a file cut after the counts: GGUF_TRUNCATED with the sizes, not an absurd count', async () => {
    const f = await readGGUF(new MemorySource(model));
    const e = await readGGUF(new MemorySource(model.subarray(0, 24))).catch((x) => x);
    expect(e).toBeInstanceOf(BitNetError);
    expect(e).toMatchObject({ kind: 'Model', code: 'GGUF_TRUNCATED' });
    expect(e.message).toMatch(/truncated.*24 bytes.*\d+ metadata entries and 24 tensors/);
    expect(e.details).toMatchObject({ nKv: f.metadata.size, nTensors: f.tensors.length, size: 24 });
    // details.needed is the size the message names
    expect(e.message).toContain(`need at least ${e.details.needed}`);
    // a file too short to have a format: FILE_TOO_SHORT (empty, or a few bytes), not UNKNOWN_FORMAT
    for (const n of [0, 3]) {
      const short = await BitNetModel.fromFile(new MemorySource(model.subarray(0, n))).catch((x) => x);
      expect(short).toMatchObject({ kind: 'Model', code: 'FILE_TOO_SHORT', details: { size: n } });
      expect(short.message).toMatch(n === 0 ? /is empty/ : /only 3 bytes/);
    }
    // Cut anywhere inside the header: truncation, never an absurd count.
    for (const n of [25, 40, 100, 1000]) {
      await expectTyped(readGGUF(new MemorySource(model.subarray(0, n))), 'GGUF_TRUNCATED');
    }
  });

  it('counts no real model has are still GGUF_ABSURD_COUNT', async () => {
    for (const [at, v] of [
      [16, 2n ** 20n], // n_kv
      [8, 2n ** 24n], // n_tensors
    ] as const) {
      const b = model.slice();
      new DataView(b.buffer).setBigUint64(at, v, true);
      await expectTyped(readGGUF(new MemorySource(b)), 'GGUF_ABSURD_COUNT');
    }
  });
});
