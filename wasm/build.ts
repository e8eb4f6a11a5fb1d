/**
 * Builds the two kernel builds from wasm/src with AssemblyScript (npm only, no system tools):
 *   wasm/build/bitnet-simd.wasm     SIMD128 + threads (shared memory, atomics)
 *   wasm/build/bitnet-relaxed.wasm  SIMD128 + relaxed SIMD + threads
 * Both import their memory (env.memory, shared, max 4 GiB) and env.exp (the host's Math.exp, for
 * the rare exact fallbacks of the ops in src/ops.ts).
 *
 * `node wasm/build.ts --if-needed` rebuilds only when the sources, flags or compiler changed
 * (a hash in wasm/build/stamp.json); `npm run build:wasm` always rebuilds.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const srcDir = join(here, 'src');
const outDir = join(here, 'build');

const COMMON = [
  '--optimizeLevel', '3', '--shrinkLevel', '0', '--noAssert',
  '--runtime', 'stub', '--importMemory', '--sharedMemory', '--initialMemory', '1', '--maximumMemory', '65536',
];
export const BUILDS = [
  { name: 'simd', flags: ['--enable', 'simd', '--enable', 'threads'] },
  { name: 'relaxed', flags: ['--enable', 'simd', '--enable', 'relaxed-simd', '--enable', 'threads'] },
];

function stampOf(): string {
  const h = createHash('sha256');
  const pkg = JSON.parse(readFileSync(join(here, '..', 'node_modules', 'assemblyscript', 'package.json'), 'utf8')) as { version: string };
  h.update(`asc ${pkg.version}\n${COMMON.join(' ')}\n${JSON.stringify(BUILDS)}\n`);
  for (const f of readdirSync(srcDir).sort()) h.update(`${f}\n`).update(readFileSync(join(srcDir, f)));
  return h.digest('hex');
}

async function main(): Promise<void> {
  const ifNeeded = process.argv.includes('--if-needed');
  const stampFile = join(outDir, 'stamp.json');
  const stamp = stampOf();
  const outputs = BUILDS.map((b) => join(outDir, `bitnet-${b.name}.wasm`));
  if (ifNeeded && existsSync(stampFile) && outputs.every((o) => existsSync(o))) {
    const old = JSON.parse(readFileSync(stampFile, 'utf8')) as { stamp: string };
    if (old.stamp === stamp) return;
  }
  mkdirSync(outDir, { recursive: true });
  const asc = (await import('assemblyscript/asc')).default;
  for (let i = 0; i < BUILDS.length; i++) {
    const t0 = performance.now();
    const args = [join(srcDir, 'index.ts'), '-o', outputs[i], ...COMMON, ...BUILDS[i].flags];
    const r = await asc.main(args, { stdout: process.stdout, stderr: process.stderr });
    if (r.error) {
      console.error(`[build:wasm] ${BUILDS[i].name} failed: ${r.error.message}`);
      process.exit(1);
    }
    console.log(`[build:wasm] ${BUILDS[i].name}: ${outputs[i]} (${readFileSync(outputs[i]).length} bytes, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  writeFileSync(stampFile, JSON.stringify({ stamp }, null, 1));
}

await main();
