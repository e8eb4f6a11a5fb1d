/**
 * Finds, checks and instantiates the kernel builds (wasm/build.ts).
 *
 * Build selection: relaxed SIMD first, then SIMD128. A build is used only if
 * `WebAssembly.validate` accepts it AND a tiny correctness self-test passes (Node 20's V8 validates
 * relaxed SIMD behind a flag yet computes i32x4.relaxed_dot_i8x16_i7x16_add_s wrong).
 *
 * Sources of the code: a `WebAssembly.Module` registered with registerKernelModules (Cloudflare
 * Workers cannot compile bytes at run time: `import m from './bitnet-relaxed.wasm'`), bytes given
 * the same way, or, in Node, the files under wasm/build read synchronously through
 * process.getBuiltinModule (no static node:* import, so the core stays runtime-free).
 * Every step is synchronous so a backend can be chosen inside a constructor.
 */
import { BitNetError } from '../../errors.ts';
import type { KernelExports, KernelImports } from './exports.ts';

export type KernelBuild = 'relaxed' | 'simd';
export const KERNEL_BUILDS: readonly KernelBuild[] = ['relaxed', 'simd'];

export type KernelSource = WebAssembly.Module | Uint8Array | ArrayBuffer;
export type KernelModules = Partial<Record<KernelBuild, KernelSource>>;

let registered: KernelModules = {};

/**
 * Supplies compiled modules (or bytes) where the kernel files are not beside the code: runtimes
 * without a file system, and bundles (the package exports the files as
 * `bitnet-edge/kernels/bitnet-relaxed.wasm` and `…/bitnet-simd.wasm`; docs/deploy.md).
 */
export function registerKernelModules(modules: KernelModules): void {
  registered = { ...registered, ...modules };
  cache.clear();
}

export interface Refusal {
  build: KernelBuild;
  reason: string;
}

export interface SelectedKernels {
  build: KernelBuild;
  module: WebAssembly.Module;
  /** Builds tried before this one and why each was refused. */
  refused: Refusal[];
}

const cache = new Map<string, SelectedKernels>();

/** The Node file of a build, or undefined where there is no synchronous file access. */
function readBuildFile(build: KernelBuild): Uint8Array | undefined {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const fs = proc?.getBuiltinModule?.('node:fs') as
    | { readFileSync(p: URL): Uint8Array; existsSync(p: URL): boolean }
    | undefined;
  if (!fs) return undefined;
  const url = new URL(`../../../wasm/build/bitnet-${build}.wasm`, import.meta.url);
  if (!fs.existsSync(url)) return undefined;
  return fs.readFileSync(url);
}

function toModule(src: KernelSource): WebAssembly.Module {
  if (src instanceof WebAssembly.Module) return src;
  const bytes = (src instanceof ArrayBuffer ? new Uint8Array(src) : src) as Uint8Array<ArrayBuffer>;
  if (!WebAssembly.validate(bytes))
    throw new Error('WebAssembly.validate refused the module (SIMD/relaxed SIMD/threads unsupported)');
  return new WebAssembly.Module(bytes);
}

/** Imports for an instance over `memory`. */
export function kernelImports(memory: WebAssembly.Memory): KernelImports {
  return {
    env: {
      memory,
      exp: Math.exp,
      abort: () => {
        throw new Error('wasm kernel abort');
      },
    },
  };
}

export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory): KernelExports {
  return new WebAssembly.Instance(module, kernelImports(memory) as unknown as WebAssembly.Imports)
    .exports as unknown as KernelExports;
}

/** A shared memory of `pages` 64 KiB pages that can grow to 4 GiB. */
export function createMemory(pages: number): WebAssembly.Memory {
  return new WebAssembly.Memory({ initial: pages, maximum: 65536, shared: true });
}

/** Runs the self-test of a build; returns the reason it failed, or undefined. */
export function selfTest(module: WebAssembly.Module, build: KernelBuild): string | undefined {
  const mem = createMemory(2);
  const k = instantiate(module, mem);
  const base = 65536;
  const u8 = new Uint8Array(mem.buffer);
  const a = Int8Array.from([-128, 127, -1, 5, 100, -77, 3, 0, 64, -64, 12, -13, 127, -128, 9, 2]);
  const b = Uint8Array.from([127, 1, 2, 0, 3, 126, 64, 5, 2, 2, 1, 0, 127, 127, 33, 7]);
  const acc = Int32Array.from([1000, -2000, 3, 1 << 20]);
  u8.set(new Uint8Array(a.buffer), base);
  u8.set(b, base + 16);
  u8.set(new Uint8Array(acc.buffer), base + 32);
  k.selftest(base, base + 64);
  const out = new Int32Array(mem.buffer, base + 64, 12);
  let dot = 0;
  const lane = [0, 0, 0, 0];
  for (let i = 0; i < 16; i++) {
    dot += a[i] * b[i];
    lane[i >> 2] += a[i] * b[i];
  }
  const got = out[0] + out[1] + out[2] + out[3];
  if (got !== dot) return `self-test: int8 dot gave ${got}, expected ${dot}`;
  if (build === 'relaxed') {
    for (let i = 0; i < 4; i++) {
      if (out[4 + i] !== lane[i] + acc[i])
        return `self-test: i32x4.relaxed_dot_i8x16_i7x16_add_s lane ${i} gave ${out[4 + i]}, expected ${lane[i] + acc[i]}`;
    }
  }
  const rounded = [2, -2, 4, 0];
  for (let i = 0; i < 4; i++)
    if (out[8 + i] !== rounded[i]) return `self-test: f32x4.nearest lane ${i} gave ${out[8 + i]}`;
  return undefined;
}

/**
 * Picks the best working build. `prefer` restricts the choice to one build. Throws a Device
 * BACKEND_UNAVAILABLE error that lists every build tried and why it was refused.
 */
export function selectKernels(opts: { prefer?: KernelBuild; modules?: KernelModules } = {}): SelectedKernels {
  const key = `${opts.prefer ?? '*'}`;
  if (!opts.modules) {
    const hit = cache.get(key);
    if (hit) return hit;
  }
  const refused: Refusal[] = [];
  if (typeof WebAssembly === 'undefined') {
    throw BitNetError.Device('BACKEND_UNAVAILABLE', 'this runtime has no WebAssembly', { backend: 'wasm', tried: [] });
  }
  const builds = opts.prefer ? [opts.prefer] : KERNEL_BUILDS;
  for (const build of builds) {
    try {
      const src = opts.modules?.[build] ?? registered[build] ?? readBuildFile(build);
      if (!src) {
        refused.push({ build, reason: 'not built (run npm run build:wasm) and no module registered' });
        continue;
      }
      const module = toModule(src);
      const why = selfTest(module, build);
      if (why) {
        refused.push({ build, reason: why });
        continue;
      }
      const sel = { build, module, refused };
      if (!opts.modules) cache.set(key, sel);
      return sel;
    } catch (e) {
      refused.push({ build, reason: (e as Error).message });
    }
  }
  throw BitNetError.Device(
    'BACKEND_UNAVAILABLE',
    `no usable wasm kernel build: ${refused.map((r) => `${r.build}: ${r.reason}`).join('; ')}`,
    { backend: 'wasm', tried: refused },
  );
}
