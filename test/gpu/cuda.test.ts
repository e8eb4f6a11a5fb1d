/**
 * The CUDA engine on a machine without a GPU (CI): nvcc compiles every kernel for sm_80 and sm_90,
 * the golden fixtures pass on the kernels' CPU emulation, the Node addon builds and loads, and
 * the cuda backend reports a missing addon, driver or GPU as BACKEND_UNAVAILABLE with the reason.
 * With the addon in emulation mode, the whole cuda backend (sequences, continuous batching) is
 * checked against the reference backend.
 *
 * One file on purpose: the steps share gpu-lambda/engine/build and must not run concurrently.
 * nvcc is required (CI has it): its absence fails loudly. On a machine WITH a GPU the
 * "unavailable" assertions are skipped; the GPU checks live in gpu-lambda/test/run-on-gpu.sh.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixtures, FIXTURE_DIR } from '../../scripts/gen-gpu-fixtures.ts';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { BitNetError } from '../../src/errors.ts';
import type { CudaAddon } from '../../src/kernels/cuda/addon-types.ts';
import { CudaBackend, createCudaBackend } from '../../src/kernels/cuda/cuda-backend.ts';
import { addonCandidates, loadCudaAddon } from '../../src/kernels/cuda/load-addon.ts';
import { ReferenceBackend } from '../../src/kernels/reference-backend.ts';
import { loadModel } from '../../src/model/load.ts';
import { f16Round as f16r, type KVStore } from '../../src/model/reference.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { synthBytes } from '../helpers/models.ts';
import { post } from '../http/helpers.ts';

// This file is mostly compilers and CPU simulations (~13 CPU-minutes) and runs beside the other
// test files (vitest.config.ts): below their priority it takes the cores they leave idle, and
// their servers and timeouts see no slowdown. Its own process only (a file gets a fresh worker);
// the compilers and simulations started from here inherit it.
try {
  setPriority(constants.priority.PRIORITY_BELOW_NORMAL);
} catch {
  // a sandbox that refuses it: the same work at the normal priority
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ENGINE = join(ROOT, 'gpu-lambda/engine');
const ADDON_DIR = join(ROOT, 'gpu-lambda/addon');
const ADDON = join(ADDON_DIR, 'build/Release/bitnet_cuda.node');
const SIM_ADDON_DIR = join(ROOT, 'gpu-lambda/addon-sim');
const SIM_ADDON = join(SIM_ADDON_DIR, 'build/Release/bitnet_cuda.node');
const CPU_TEST = join(ROOT, 'gpu-lambda/test/build/bn_test_cpu');
const GPU_TEST = join(ROOT, 'gpu-lambda/test/build/bn_test');
const SIM_TEST = join(ROOT, 'gpu-lambda/test/build/bn_test_sim');
const SIM_SELFTEST = join(ROOT, 'gpu-lambda/test/build/bn_sim_selftest');
const SIM_TEST_ASAN = join(ROOT, 'gpu-lambda/test/build/bn_test_sim_asan');
const SIM_SELFTEST_ASAN = join(ROOT, 'gpu-lambda/test/build/bn_sim_selftest_asan');

/** A command's exit status (-1 when a signal ended it) and its output: stdout, then stderr. */
interface Run {
  code: number;
  out: string;
}

function run(cmd: string, args: string[], cwd = ROOT, env?: NodeJS.ProcessEnv): Run {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20, env: env ?? process.env });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** `run` in the background: at most two at a time (CI has 2 cores), in the order asked for. */
const runInBackground = (() => {
  let active = 0;
  const waiting: (() => void)[] = [];
  const start = (cmd: string, args: string[], env: NodeJS.ProcessEnv) =>
    new Promise<Run>((resolve) => {
      const c = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      c.stdout.on('data', (d: Buffer) => out.push(d));
      c.stderr.on('data', (d: Buffer) => err.push(d));
      c.on('error', (e) => resolve({ code: -1, out: String(e) }));
      c.on('close', (code) => resolve({ code: code ?? -1, out: `${Buffer.concat(out)}${Buffer.concat(err)}` }));
    });
  return (cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> =>
    new Promise<void>((go) => (active < 2 ? go() : waiting.push(go)))
      .then(() => {
        active++;
        return start(cmd, args, env);
      })
      .finally(() => {
        active--;
        waiting.shift()?.();
      });
})();

function nodedirArgs(): string[] {
  const d = process.env.npm_config_nodedir ?? '/usr';
  return existsSync(join(d, 'include/node/node_api.h')) ? [`--nodedir=${d}`] : [];
}

/** A small synthetic BitNet b1.58 model (I2_S weights) from `seed`. */
const bitnetModel = async (seed: number) =>
  loadModel(new MemorySource(await synthBytes({ qtype: 'i2_s', seed, arch: 'bitnet-b1.58' })));

const noKV: KVStore = { write() {}, readK() {}, readV() {} };
const newKV = (): KVStore => ({ write() {}, readK() {}, readV() {} });

/**
 * A clean run of the test program: its summary line with no failure (the failing lines, the
 * simulator's reports and any sanitizer report shown otherwise), at least `minPassed` checks,
 * each of `labels` passed, exit status 0.
 */
function expectAllPassed(r: { code: number; out: string }, minPassed: number, labels: string[]): void {
  const summary = /== (\d+) passed, (\d+) failed/.exec(r.out);
  expect(summary, r.out.slice(-3000)).not.toBeNull();
  const bad = r.out
    .split('\n')
    .filter((l) => l.startsWith('[FAIL]') || l.startsWith('[bn_sim]') || l.includes('Sanitizer'));
  expect(Number(summary![2]), bad.join('\n')).toBe(0);
  expect(Number(summary![1])).toBeGreaterThanOrEqual(minPassed);
  for (const k of labels) expect(r.out, k).toContain(`[PASS] ${k}`);
  expect(r.code, bad.join('\n')).toBe(0);
}

/** One simulation build's self-test and the runs its checks were split into. */
interface SimChecks {
  self: Promise<Run>;
  runs: Promise<Run>[];
}

/**
 * The test program on the CPU simulation: its two builds (AddressSanitizer, plain), the kernels'
 * checks under ASan and in reverse order, and the benchmarks' smoke run. All of it goes to the
 * background queue when the file starts, beside the nvcc build that the first tests run in the
 * foreground; the runs follow once both builds are done, two at a time, and each test awaits its
 * own (the ASan run's long-context 'gpu/fast' section runs beside its other sections). `asan`, `reverse` and `smoke` resolve undefined when their build
 * failed (the tests then report the build's output).
 */
interface SimRuns {
  asanBuild: Promise<Run>;
  plainBuild: Promise<Run>;
  asan: Promise<SimChecks | undefined>;
  reverse: Promise<SimChecks | undefined>;
  smoke: Promise<Run | undefined>;
  smokeDir: string;
}
let simRuns: SimRuns | undefined;
function startSimRuns(): SimRuns {
  if (simRuns) return simRuns;
  const bg = runInBackground;
  // Separate object directories (build/sim-asan, build/sim): the two builds may run at once, and
  // beside the nvcc build (build/*.o). The sim addon's build (make sim-lib, build/sim) waits for
  // the plain one.
  const asanBuild = bg('make', ['-C', ENGINE, '-j2', 'SIM_ASAN=1', 'sim-test', 'sim-selftest']);
  const plainBuild = bg('make', ['-C', ENGINE, '-j2', 'sim-test', 'sim-selftest']);
  const smokeDir = mkdtempSync(join(tmpdir(), 'bn-smoke-'));
  const checks = ['--no-random', '--fixtures', FIXTURE_DIR];
  const reverse = { ...process.env, BN_SIM_ORDER: 'reverse' };
  // Once both builds are done, the runs queue up two at a time: ASan's gpu/fast, the smoke, the
  // reverse run, ASan's opt-in sections, its other sections, the selftests (CPU seconds alone,
  // 2026-11-29: 75, 120, 110, 67, 29), so the last to end is a short one. In CI runs of that day
  // this order took the file 681 s, the smoke and the reverse run first 737 s. (With ASan's other
  // sections in one process, a CI run of 2026-11-28 ended on it alone: ~55 s with one core idle.)
  const runs = Promise.all([asanBuild, plainBuild]).then(([a, p]) => {
    const asanOk = a.code === 0;
    const plainOk = p.code === 0;
    const asanFast = asanOk ? bg(SIM_TEST_ASAN, [...checks, '--only', 'gpu/fast']) : undefined;
    const smoke = plainOk
      ? bg(SIM_TEST, [...checks, '--only', 'bench|profile', '--bench-smoke', '--profile', '--out', smokeDir])
      : undefined;
    const reverseRun = plainOk ? bg(SIM_TEST, [...checks, '--fast-2b4t'], reverse) : undefined;
    const asanOptIn = asanOk ? bg(SIM_TEST_ASAN, [...checks, '--only', 'gpu/opt-in']) : undefined;
    const asanRest = asanOk ? bg(SIM_TEST_ASAN, [...checks, '--skip', 'gpu/fast|gpu/opt-in']) : undefined;
    return {
      smoke,
      asan:
        asanFast && asanOptIn && asanRest
          ? { runs: [asanFast, asanOptIn, asanRest], self: bg(SIM_SELFTEST_ASAN, []) }
          : undefined,
      reverse: reverseRun ? { runs: [reverseRun], self: bg(SIM_SELFTEST, [], reverse) } : undefined,
    };
  });
  const asan = runs.then((r) => r.asan);
  const reverseRuns = runs.then((r) => r.reverse);
  const smoke = runs.then((r) => r.smoke);
  simRuns = { asanBuild, plainBuild, asan, reverse: reverseRuns, smoke, smokeDir };
  return simRuns;
}

/** Every process of the simulation runs has ended. */
async function simRunsEnded(s: SimRuns): Promise<void> {
  const [asan, reverse] = await Promise.all([s.asan, s.reverse, s.smoke]);
  await Promise.all([asan?.self, ...(asan?.runs ?? []), reverse?.self, ...(reverse?.runs ?? [])]);
}

/** Whether any test in `suite` (a file or describe block) is going to run: a filter skips the others. */
function anyTestRuns(
  suite: { tasks?: { mode: string; type: string; name: string; tasks?: unknown[] }[] },
  name: RegExp,
): boolean {
  return (suite.tasks ?? []).some((t) =>
    t.type === 'suite'
      ? anyTestRuns(t as Parameters<typeof anyTestRuns>[0], name)
      : t.mode === 'run' && name.test(t.name),
  );
}

describe('CUDA engine without a GPU', () => {
  // The simulation's builds and runs start first, in the background, when a test that needs them
  // is going to run (a filter may leave them all out); the file ends after all of them.
  // biome-ignore lint/correctness/noEmptyPattern: vitest wants a pattern for the context; the suite comes second.
  beforeAll(({}, suite) => {
    if (anyTestRuns(suite, /under AddressSanitizer|last to first|in its own process|every benchmark and the profile/))
      startSimRuns();
  });
  afterAll(async () => {
    if (!simRuns) return;
    await simRunsEnded(simRuns);
    rmSync(simRuns.smokeDir, { recursive: true, force: true });
  });
  let hasGpu = false;

  it('nvcc 13 is installed (required: CI compiles every kernel)', () => {
    let version = '';
    try {
      version = execFileSync('nvcc', ['--version'], { encoding: 'utf8' });
    } catch (e) {
      throw new Error(`nvcc is not on PATH: the CUDA build checks cannot run (${(e as Error).message})`);
    }
    expect(version).toMatch(/release \d+\.\d+/);
  });

  it('every .cu compiles for sm_80 and sm_90 (and both test programs build), no spills in the hot kernels', () => {
    // One make: the static library (every .cu, both architectures), the CPU-only test program and
    // the GPU one (its GPU-only sections are compiled here, so a GPU session never meets a build error).
    const r = run('make', ['-C', ENGINE, '-j2', 'lib', 'cpu-test', 'gpu-test']);
    expect(r.code, r.out.slice(-4000)).toBe(0);
    const cus = readdirSync(join(ENGINE, 'src')).filter((f) => f.endsWith('.cu'));
    expect(cus.length).toBeGreaterThanOrEqual(7);
    for (const cu of cus) {
      const base = cu.replace(/\.cu$/, '');
      expect(existsSync(join(ENGINE, 'build', `${base}.cu.o`)), cu).toBe(true);
      const report = readFileSync(join(ENGINE, 'build', `${base}.ptxas.txt`), 'utf8');
      // ptxas -v reports one block per (kernel, architecture): every kernel file has both.
      if (readFileSync(join(ENGINE, 'src', cu), 'utf8').includes('__global__')) {
        expect(report, `${cu} sm_80`).toMatch(/Compiling entry function '.*' for 'sm_80'/);
        expect(report, `${cu} sm_90`).toMatch(/Compiling entry function '.*' for 'sm_90'/);
      }
      if (/k_(gemv|gemm|attn|head|norm|ffn_chain|layer_chain)/.test(cu)) {
        for (const m of report.matchAll(/(\d+) bytes spill stores/g)) expect(Number(m[1]), `${cu} spills`).toBe(0);
      }
    }
    // The batch-1 gate+up GEMV (gemv_kernel<1, 8, 8>: 13824 rows, 864 blocks of 128 threads) fits
    // one wave on a 132-SM GPU only at 7 blocks per SM, i.e. at most 72 registers on sm_90 (run 7,
    // H200: 80 registers, two waves, 11.2 against 8.6 us).
    const gemv = readFileSync(join(ENGINE, 'build', 'k_gemv.ptxas.txt'), 'utf8');
    const entry =
      /Compiling entry function '_ZN2bn11gemv_kernelILi1ELi8ELi8ELb0ELb0EEEv[^']*' for 'sm_90'[\s\S]*?Used (\d+) registers/.exec(
        gemv,
      );
    expect(entry, 'gemv_kernel<1, 8, 8> sm_90 in k_gemv.ptxas.txt').not.toBeNull();
    expect(Number(entry![1]), 'gemv_kernel<1, 8, 8> registers on sm_90').toBeLessThanOrEqual(72);
    // Its twins (BN_GEMV=rot, BN_GEMV=smem) under the same cap, so that the bench's A/B times the
    // loads and not a second wave.
    for (const [mangled, name] of [
      ['15gemv_rot_kernel', 'gemv_rot_kernel'],
      ['16gemv_smem_kernel', 'gemv_smem_kernel'],
    ]) {
      const twin = new RegExp(
        `Compiling entry function '_ZN2bn${mangled}ILi1ELi8ELi8EEEv[^']*' for 'sm_90'[\\s\\S]*?Used (\\d+) registers`,
      ).exec(gemv);
      expect(twin, `${name}<1, 8, 8> sm_90 in k_gemv.ptxas.txt`).not.toBeNull();
      expect(Number(twin![1]), `${name}<1, 8, 8> registers on sm_90`).toBeLessThanOrEqual(72);
    }
    // nvcc for two architectures on a 2-core machine: ~90 s alone; 324 s at low priority beside
    // the other test files (a CI run of 2026-11-28), longer beside the simulation's builds too.
  }, 900_000);

  it('the golden fixtures are current (regenerated from the TS reference, byte for byte)', async () => {
    const files = await buildFixtures();
    for (const [name, bytes] of files) {
      const committed = new Uint8Array(readFileSync(join(FIXTURE_DIR, name)));
      expect(committed.length, name).toBe(bytes.length);
      expect(
        Buffer.compare(Buffer.from(committed), Buffer.from(bytes)),
        `${name} is stale: run node scripts/gen-gpu-fixtures.ts`,
      ).toBe(0);
    }
  });

  it("the test program passes every check on the kernels' CPU emulation (--cpu-only)", () => {
    // The fast numerics' checks ran: kernel oracles and whole models.
    expectAllPassed(run(CPU_TEST, ['--cpu-only', '--fixtures', FIXTURE_DIR]), 100, [
      'emu/fast_attention:',
      'emu/fast_gemv 8448x128 gateup M=8:',
      'emu/model-relu2/fast_deterministic:',
      'host/tune_search:',
      'host/tune_keeps_default:',
    ]);
  });

  // The test program on the CPU simulation (engine/sim): its GPU sections run the kernels' own
  // sources against the emulation and the TS reference's fixtures. Asserts a clean run: the
  // simulator's self-test, every check passing, and each kernel family present.
  function expectSimRun(build: Run, self: Run, runs: Run[]): void {
    expect(build.code, build.out.slice(-4000)).toBe(0);
    expect(self.out).toMatch(/== sim selftest: (\d+) passed, 0 failed/);
    expect(Number(/== sim selftest: (\d+) passed/.exec(self.out)![1])).toBeGreaterThanOrEqual(16);
    // Static shared memory is undefined at each block's start, as on a GPU (BN_SHARED).
    expect(self.out).toContain('[PASS] sim/static shared memory starts as 0xcd bytes in every block');
    // Cooperative launches: blocks interleave and meet at grid-wide barriers; a plain launch whose
    // blocks wait for each other fails instead of hanging.
    expect(self.out).toContain('[PASS] sim/cooperative launch: 5 blocks meet at 6 grid-wide barriers');
    expect(self.out).toContain(
      '[PASS] sim/a plain launch in which blocks wait for each other fails instead of hanging',
    );
    expect(self.code, self.out).toBe(0);
    // Every kernel family ran on the simulated device, the opt-in variants and fast numerics too
    // (over the processes the sections were split into).
    for (const r of runs) expectAllPassed(r, 1, []);
    const passed = runs.reduce((n, r) => n + Number(/== (\d+) passed/.exec(r.out)![1]), 0);
    expect(passed).toBeGreaterThanOrEqual(280);
    const out = runs.map((r) => r.out).join('\n');
    for (const k of [
      'sim/device: bn_sim',
      'sim/norm640:',
      'sim/i2s_70x640_gemm_int:',
      'sim/attn_b:',
      'sim/head_mma:',
      'sim/select:',
      'sim/model-relu2/graphs/mixed_batch:',
      'sim/model-relu2/gemm-plain/gemm/mixed_batch:',
      'sim/model-relu2/gemm-deep/gemm/mixed_batch:',
      'sim/model-silu/gemm-deep/gemm/mixed_batch:',
      'sim/model-relu2/attn-generic/gemv/prefill_then_decode:',
      'sim/model-silu/attn-ring/gemv/mixed_batch:',
      'sim/opt-in attn-ring/launches:',
      'sim/attention-ring 4x1 heads T=300:',
      'sim/attention-fast 4x1 heads T=300:',
      'sim/gemv-ilp 200x2560 M=1:',
      'sim/gemv-rot 8448x256 M=8:',
      'sim/opt-in gemv-rot/launches:',
      'sim/gemv-smem 200x2560 M=8:',
      'sim/opt-in gemv-smem/launches:',
      'sim/gemv-ilp 8448x256 M=8:',
      'sim/gemv 8448x256 M=3:',
      'sim/model-relu2/gemv-ilp/gemv/mixed_batch:',
      'sim/model-silu/attn-tail/gemm/mixed_batch:',
      'sim/opt-in attn-tail/launches:',
      'sim/attention-ring+tail 4x1 heads T=300:',
      'sim/device1: device 1 opened and configured after device 0',
      'sim/device1/attention-ring+tail 4x1 heads T=300:',
      'sim/model-relu2/norm-regs/gemm/mixed_batch:',
      'sim/gemm-splitk-tiles 200x2560 M=100 resid:',
      'sim/gemm-splitk-pipelined-tiles 72x1280 M=100 store:',
      'sim/model-silu/run5-defaults/gemm/mixed_batch:',
      'sim/model-relu2/splitk-atomics/gemm/mixed_batch:',
      'sim/model-silu/no-tail-cache/gemv/mixed_batch:',
      'sim/gemm-splitk-deep-tiles 200x2560 M=100 resid:',
      'sim/gemm-splitk-deep-kernel 200x2560 M=100 resid:',
      'sim/gemm-splitk-pipelined-kernel qkv 256x2560 M=70:',
      'sim/gemm-splitk-tiles qkv 256x2560 M=70:',
      'sim/select_walk V=128256:',
      'sim/grid-sync 6 blocks x 128 threads:',
      'sim/grid-sync 3 blocks x 1024 threads:',
      'sim/grid-sync refusals:',
      'sim/grid-sync in a CUDA graph, 6 blocks:',
      'sim/grid-sync-counter 6 blocks x 128 threads:',
      'sim/grid-sync-counter in a CUDA graph, 6 blocks:',
      'sim/grid-sync watchdog:',
      'sim/head_mma-plain 300x256 R=70:',
      'sim/head_mma-pipelined 300x256 R=70:',
      'sim/head_mma-wide 300x256 R=9:',
      'sim/head_mma-wide3 300x256 R=70:',
      'sim/head_mma tuning:',
      'sim/model-relu2/head-wide/gemm/prefill_all:',
      'sim/opt-in head-wide/launches:',
      'sim/opt-in head-wide3/launches:',
      'sim/opt-in head-wide8/launches:',
      'sim/ffn-chain 256x640 relu2, 1 blocks:',
      'sim/ffn-chain 256x4224 silu, 3 blocks:',
      'sim/ffn-chain 256x4224 relu2, the default grid:',
      'sim/ffn-chain refusals:',
      'sim/model-relu2/persist-ffn/gemv/mixed_batch:',
      'sim/model-silu/persist-ffn/gemm/prefill_then_decode:',
      'sim/opt-in persist-ffn/launches:',
      'sim/layer-chain 4 heads (2 kv) x 64, n_ff 640, T=37, relu2, 1 blocks:',
      'sim/layer-chain 4 heads (2 kv) x 64, n_ff 640, T=37, relu2, 3 blocks, L2 prefetch, split scores, norm weights ahead, staged weights:',
      'sim/layer-chain 4 heads (2 kv) x 64, n_ff 640, T=37, relu2, 3 blocks, norm weights ahead:',
      'sim/layer-chain 4 heads (2 kv) x 64, n_ff 640, T=37, relu2, 3 blocks, staged weights:',
      'sim/layer-chain 2 heads (1 kv) x 128, n_ff 384, T=300, relu2, 4 blocks, L2 prefetch, split scores, norm weights ahead, staged weights:',
      'sim/layer-chain 2 heads (1 kv) x 128, n_ff 384, T=300, relu2, the default grid, L2 prefetch, split scores, norm weights ahead, staged weights:',
      'sim/layer-chain 4 heads (2 kv) x 64, n_ff 256, T=200, silu, the default grid, L2 prefetch, split scores, norm weights ahead, staged weights:',
      'sim/step-chain 2 layers of 2 heads (1 kv) x 128, n_ff 384, T=300, 8 blocks:',
      'sim/layer-chain refusals:',
      'sim/model-relu2/persist-layer/gemv/mixed_batch:',
      'sim/model-relu2/persist-layer/chunked/prefill_then_decode:',
      'sim/opt-in persist-layer/launches:',
      'sim/step-chain 3 layers of 4 heads (2 kv) x 64, n_ff 640, T=37, 3 blocks:',
      'sim/step-chain 2 layers of 2 heads (1 kv) x 128, n_ff 384, T=300, the default grid:',
      'sim/model-silu/persist-step/gemv/prefill_then_decode:',
      'sim/model-silu/persist-step/paths_agree:',
      'sim/opt-in persist-step/launches:',
      'host/knobs:',
      'sim/head_mma-wide8 300x256 R=70:',
      'sim/grid-sync+norm n=6912:',
      'sim/select_walk V=1003:',
      'sim/autotune/models:',
      'sim/autotune/split:',
      'sim/pdl_vs_plain:',
      'sim/fast_attention:',
      'sim/fast_gemv 8448x128 gateup M=8:',
      'sim/fast_vs_emulation:',
      'sim/fast_long_t700_m3:',
    ])
      expect(out, k).toContain(`[PASS] ${k}`);
  }

  it("the kernels' own CUDA sources pass the GPU checks on the CPU simulation, under AddressSanitizer", async () => {
    // g++ compiles every .cu against sim/cuda_runtime.h (CUDA on the CPU: blocks in turn, threads
    // as fibers). AddressSanitizer aborts the run on any access outside a device allocation or a
    // shared array: a memcheck of the real kernels in every CI run. The long 'gpu/fast' section,
    // the opt-in sections and the others run in three processes, two at a time.
    const s = startSimRuns();
    const [build, asan] = await Promise.all([s.asanBuild, s.asan]);
    if (!asan) return expectSimRun(build, build, []);
    expectSimRun(build, await asan.self, await Promise.all(asan.runs));
    // And it does catch them: a kernel writing one past a thread's local array, a device
    // allocation or the dynamic shared memory, after earlier blocks left deep frames on the fiber
    // stacks (whose poison the simulation clears only where it may be), ends in the report.
    for (const [kind, report] of [
      ['stack', 'stack-buffer-overflow'],
      ['global', 'heap-buffer-overflow'],
      ['shared', 'heap-buffer-overflow'],
    ]) {
      const r = run(SIM_SELFTEST_ASAN, ['--fault', kind]);
      expect(r.out, kind).toContain(`AddressSanitizer: ${report}`);
      expect(r.out, kind).toContain(`k_fault_${kind}`);
      expect(r.out, kind).not.toContain('not detected');
      expect(r.code, kind).not.toBe(0);
    }
  }, 900_000);

  it('the same checks pass with blocks and threads run last to first (no result depends on the order: no races)', async () => {
    // Threads run in turn between barriers and blocks one after another, so a race (a value read
    // in the barrier interval in which another thread writes it, or a block relying on another
    // having run) gives a different result in the other order.
    // This run also takes the fast numerics' 2B-4T shapes (T up to 4096, 16 splits, the GEMV's
    // shared-memory attribute at 8 tokens x 6912).
    const s = startSimRuns();
    const [build, reverse] = await Promise.all([s.plainBuild, s.reverse]);
    if (!reverse) return expectSimRun(build, build, []);
    const self = await reverse.self;
    const runs = await Promise.all(reverse.runs);
    expectSimRun(build, self, runs);
    const out = runs.map((r) => r.out).join('\n');
    for (const k of ['sim/fast_attention_2b4t:', 'sim/fast_gemv 13824x2560 gateup M=8:', 'sim/fast_long_t2300_m1:'])
      expect(out, k).toContain(`[PASS] ${k}`);
    expect(self.out).toContain('[PASS] sim/BN_SIM_ORDER=reverse: blocks and threads run last to first');
  }, 900_000);

  it('each GPU section runs in its own process: a crash, a hang or a fault there costs that section only', async () => {
    const build = await startSimRuns().plainBuild;
    expect(build.code, build.out.slice(-4000)).toBe(0);
    // The sim runs above already went through the isolation (every section forks). Here its own
    // check: a child's reports reach the parent, a crashed one (abort) and a hung one (killed at
    // its 1 s limit) each add one failed "<name>/process" check, and bench rows from a child land
    // in the parent's results.md.
    const r = run(SIM_TEST, ['--isolation-selftest']);
    expect(r.out).toContain('[FAIL] iso/crash/process: ended by signal 6');
    expect(r.out).toContain('[FAIL] iso/hang/process: killed after its limit of 1 s');
    expect(r.out).toContain("[PASS] isolation/bench rows and heading from a child land in the parent's results.md");
    expect(r.out.match(/^\[PASS\] isolation\//gm)?.length, r.out).toBe(5);
    expect(r.out).toContain('== isolation selftest: 0 failed');
    expect(r.code, r.out).toBe(0);
    // --only runs just the sections named (a GPU session reruns one that failed, cheaply).
    const one = run(SIM_TEST, ['--no-random', '--only', 'opt-in norm-regs', '--fixtures', FIXTURE_DIR]);
    expectAllPassed(one, 20, ['sim/model-relu2/norm-regs/gemm/mixed_batch:']);
    expect(one.out).toContain('(section gpu/opt-in norm-regs: ');
    expect(one.out.match(/^\(section |^ {2}\(section /gm)?.length).toBe(1);
    expect(one.out).not.toContain('sim/model-relu2/gemv/');
    expect(one.out).not.toContain('sim/fast_');
  }, 900_000);

  it('every benchmark and the profile run on the CPU simulation (--bench-smoke: small shapes, a small model)', async () => {
    // The bench's code (every engine configuration, the kernel rows, the fast-numerics agreement,
    // the profile) otherwise first runs on a GPU. Here each part runs in its own process on the
    // simulated device, with small shapes; the numbers mean nothing, the paths and buffers do.
    const s = startSimRuns();
    const build = await s.plainBuild;
    expect(build.code, build.out.slice(-4000)).toBe(0);
    const out = s.smokeDir;
    try {
      const r = (await s.smoke)!;
      expectAllPassed(r, 1, ['sim/fast_agreement_2b4t:']);
      expect(r.out.match(/^ {2}\(section bench\//gm)?.length, 'bench sections').toBe(31);
      expect(r.out).toContain('(section gpu/profile: ');
      const md = readFileSync(join(out, 'results.md'), 'utf8');
      // Every configuration left its rows (19 have batch-1 rows, 11 batched decode), and the
      // kernel rows.
      expect(md.match(/^\| decode batch 1, /gm)?.length, md).toBe(19);
      expect(md.match(/^\| decode batch 16, /gm)?.length, md).toBe(11);
      for (const row of [
        '| device-to-device copy',
        '| GEMV 64x2560 (smoke), M=64 (mma, pipelined, split-K tiles)',
        '| GEMV 64x2560 (smoke), M=64 (mma, deep, split-K tiles)',
        '| timeline GEMV 200x256 (smoke), M=1 GEMV + norm tail | span ',
        '| timeline GEMV 64x2560 (smoke), M=64 GEMM | span ',
        '| GEMV stacked',
        '| LM head int8, R=1',
        '| select V=128256, R=1, T 0.8',
        '| attention (BN_ATTN=fast)',
        '| attention (BN_ATTN=ring)',
        '| grid barrier (cooperative launch), 8 blocks x 128 threads | ',
        '| grid barrier + norm n=6912 in every block (cooperative launch), 4 blocks x 128 threads | ',
        '| decode batch 16, f16 head, CUDA graph, plain head GEMM (BN_HEAD_MMA=plain)',
        '| LM head f16, R=64 (mma, 32 columns per warp, 2 stages (BN_HEAD_MMA=wide)) | ',
        '| head GEMM kernel tuned at engine creation | LM head ',
        '| o + gate/up + down GEMVs with their norm tails, 256x640, M=1, 2 weight copies (three launches) | ',
        '| persistent FFN chain (BN_PERSIST=ffn), 256x640, M=1, 2 weight copies, 64 blocks (2 per SM asked; 64 resident at most) | ',
        '| decode batch 1, f16 head, CUDA graph, persistent FFN chain (BN_PERSIST=ffn), context ',
        '| QKV GEMV + attention + o, gate/up, down GEMVs with their norm tails, 4 heads x 64, n_ff 640, T=37, M=1, 2 layer copies (five launches) | ',
        '| QKV GEMV + attention + persistent FFN chain, 4 heads x 64, n_ff 640, T=37, M=1, 2 layer copies (three launches) | ',
        '| persistent layer (BN_PERSIST=layer), 4 heads x 64, n_ff 640, T=37, M=1, 2 layer copies, 64 blocks (2 per SM asked; 64 resident at most) | ',
        '| persistent layer (BN_PERSIST=layer), 4 heads x 64, n_ff 640, T=37, M=1, 2 layer copies, 64 blocks (2 per SM asked; 64 resident at most), no L2 prefetch | ',
        '| persistent layer (BN_PERSIST=layer), 4 heads x 64, n_ff 640, T=37, M=1, 2 layer copies, 64 blocks (2 per SM asked; 64 resident at most), scores in one block per head | ',
        '| decode batch 1, f16 head, CUDA graph, persistent layer (BN_PERSIST=layer), context ',
        '| decode batch 1, f16 head, CUDA graph, persistent step (BN_PERSIST=step), context ',
        '| decode batch 1, int8 head, CUDA graph, persistent step (BN_PERSIST=step), context ',
        '| grid barrier (cooperative launch, one growing counter), 8 blocks x 128 threads | ',
        '| decode batch 16, f16 head, CUDA graph, attention sub-norm as its tail (BN_ATTN_TAIL=1)',
        '| GEMV 64x2560 (smoke), M=1, ILP (BN_GEMV=ilp)',
        '| GEMV stacked 3 x 200x256 (smoke), one launch, M=4, ILP (BN_GEMV=ilp)',
        '| decode batch 4, f16 head, CUDA graph, GEMV inner loop ILP (BN_GEMV=ilp)',
        '| GEMV 64x2560 (smoke), M=1, planes rotated (BN_GEMV=rot)',
        '| GEMV stacked 3 x 200x256 (smoke), one launch, M=4, planes rotated (BN_GEMV=rot)',
        '| decode batch 4, f16 head, CUDA graph, GEMV planes rotated (BN_GEMV=rot)',
        '| GEMV 64x2560 (smoke), M=1, rows in shared memory (BN_GEMV=smem)',
        '| GEMV stacked 3 x 200x256 (smoke), one launch, M=4, rows in shared memory (BN_GEMV=smem)',
        '| decode batch 8, f16 head, CUDA graph, GEMV rows in shared memory (BN_GEMV=smem)',
        '| decode batch 1, f16 head, CUDA graph, ring attention (BN_ATTN=ring)',
        '| prefill 64 tokens',
        '| FAST vs EXACT numerics, small model',
        'configurations with other bits: 0',
        'Per-kernel profile',
      ])
        expect(md, row).toContain(row);
      const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { rows: unknown[] };
      expect(json.rows.length).toBeGreaterThanOrEqual(60);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 900_000);

  it('the per-kernel profiler of the GPU test program runs (small model, CPU emulation)', () => {
    const r = run(GPU_TEST, ['--cpu-only', '--profile-only']);
    expect(r.code, r.out.slice(-3000)).toBe(0);
    // The three tables (batch 1, batch 4, batch 1 with fast numerics), each with the decode step's
    // kernels and a sum.
    expect(r.out).toMatch(/Decode step, batch 1, exact numerics,/);
    expect(r.out).toMatch(/Decode step, batch 4, exact numerics,/);
    expect(r.out).toMatch(/Decode step, batch 1, FAST numerics,/);
    for (const k of [
      'attention+tail M=1',
      'gemv+tail',
      'head gemv R=1',
      'select R=1',
      'embed+norm M=1',
      'attention split 16+stats M=1',
      'gemv(stats in)+stats',
    ]) {
      expect(r.out, k).toContain(`| ${k}`);
    }
    const sums = [...r.out.matchAll(/\| \*\*sum of kernels\*\* \| \| \| \*\*([\d.]+)\*\* \|/g)].map((m) =>
      Number(m[1]),
    );
    expect(sums.length).toBe(3);
    for (const v of sums) expect(v).toBeGreaterThan(0);
    // --profile-part picks one table (what run-on-gpu.sh gives ncu); a wrong name is a usage error.
    const part = run(GPU_TEST, ['--cpu-only', '--profile-only', '--profile-part', 'exact64']);
    expect(part.code, part.out.slice(-3000)).toBe(0);
    expect(part.out).toMatch(/Decode step, batch 4, exact numerics,/);
    expect(part.out).not.toMatch(/Decode step, batch 1,/);
    const bad = run(GPU_TEST, ['--cpu-only', '--profile-only', '--profile-part', 'exact2']);
    expect(bad.code).toBe(2);
    expect(bad.out).toContain('--profile-part exact1|exact64|fast1');
  });

  it('the Node addon builds with node-gyp', () => {
    const gyp = join(ROOT, 'node_modules/.bin/node-gyp');
    const r = run(gyp, ['rebuild', '--directory', ADDON_DIR, '-j', '2', ...nodedirArgs()]);
    expect(r.code, r.out.slice(-4000)).toBe(0);
    expect(existsSync(ADDON)).toBe(true);
  });

  describe('the cuda backend', () => {
    let addon: CudaAddon;
    beforeAll(() => {
      addon = loadCudaAddon({ path: ADDON, probeDevice: false }).addon;
      hasGpu = addon.queryDevice(0).ok;
    });

    it('without an addon: BACKEND_UNAVAILABLE, reason no-addon, with the paths tried', () => {
      expect(() => loadCudaAddon({ path: '/nonexistent/bitnet_cuda.node', searchDefaults: false })).toThrow(
        expect.objectContaining({
          kind: 'Device',
          code: 'BACKEND_UNAVAILABLE',
          details: expect.objectContaining({ reason: 'no-addon', tried: ['/nonexistent/bitnet_cuda.node'] }),
        }),
      );
      expect(addonCandidates('/x/y.node')[0]).toBe('/x/y.node');
    });

    it('no driver or GPU: queryDevice says why, and the backend refuses with BACKEND_UNAVAILABLE', async (ctx) => {
      const d = addon.queryDevice(0);
      if (d.ok) ctx.skip();
      expect(d.deviceCount).toBe(0);
      expect(d.error).toMatch(/cudaGetDeviceCount returned \d+/);
      const model = await bitnetModel(3);
      let err: unknown;
      try {
        createCudaBackend(model, { addonPath: ADDON, emulate: false });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BitNetError);
      const be = err as BitNetError;
      expect(be.kind).toBe('Device');
      expect(be.code).toBe('BACKEND_UNAVAILABLE');
      expect(['no-driver', 'no-gpu']).toContain(be.details.reason);
      expect(be.details.cudaError).toBe(d.cudaError);
      expect(be.message).toContain('cudaGetDeviceCount');
    });

    it("BitNetModel with backend 'cuda' refuses cleanly where there is no GPU", async (ctx) => {
      if (hasGpu) ctx.skip();
      const saved = process.env.BITNET_CUDA_ADDON;
      process.env.BITNET_CUDA_ADDON = ADDON;
      try {
        const bytes = await synthBytes({ qtype: 'i2_s', seed: 3, arch: 'bitnet-b1.58' });
        await expect(BitNetModel.fromFile(new MemorySource(bytes), { backend: 'cuda' })).rejects.toMatchObject({
          code: 'BACKEND_UNAVAILABLE',
          details: { backend: 'cuda' },
        });
      } finally {
        if (saved === undefined) delete process.env.BITNET_CUDA_ADDON;
        else process.env.BITNET_CUDA_ADDON = saved;
      }
    });

    it('unsupported projection types are refused as BACKEND_UNAVAILABLE (reason unsupported)', async () => {
      const model = await loadModel(new MemorySource(await synthBytes({ qtype: 'tq2_0', seed: 3 })));
      expect(() => createCudaBackend(model, { addonPath: ADDON, emulate: true })).toThrow(
        expect.objectContaining({
          code: 'BACKEND_UNAVAILABLE',
          details: expect.objectContaining({ reason: 'unsupported' }),
        }),
      );
    });

    it("the HTTP app on the cuda backend (CPU emulation): a request's n choices run at once in one slot and answer as on the reference backend", async () => {
      const { createApp } = await import('../../src/http/app.ts');
      const bytes = await synthBytes({ qtype: 'i2_s', seed: 5, arch: 'bitnet-b1.58' });
      // BitNetModel's cuda backend takes its options from BITNET_CUDA_OPTIONS (as the GPU server does)
      const saved = process.env.BITNET_CUDA_OPTIONS;
      process.env.BITNET_CUDA_OPTIONS = JSON.stringify({ addonPath: ADDON, emulate: true, maxSeqs: 8, maxCtx: 128 });
      let gpu: BitNetModel;
      try {
        gpu = await BitNetModel.fromFile(new MemorySource(bytes), { backend: 'cuda' });
      } finally {
        if (saved === undefined) delete process.env.BITNET_CUDA_OPTIONS;
        else process.env.BITNET_CUDA_OPTIONS = saved;
      }
      expect(gpu.engine.backendName).toBe('cuda');
      expect(gpu.engine.runsGenerationsTogether).toBe(true);
      const ref = await BitNetModel.fromFile(new MemorySource(bytes), { backend: 'reference' });
      expect(ref.engine.runsGenerationsTogether).toBe(false);
      // one slot, no queue: the three choices share the request's slot
      const appOf = (model: BitNetModel) =>
        createApp({ model, modelId: 'm', limits: { maxConcurrent: 1, maxQueue: 0 } });
      const ask = async (model: BitNetModel, extra: Record<string, unknown> = {}) => {
        const body = {
          messages: [{ role: 'user', content: 'tell me something' }],
          max_tokens: 8,
          temperature: 0.9,
          seed: 7,
          n: 3,
          ...extra,
        };
        const r = await appOf(model).request(
          ...post('/v1/chat/completions', body, { 'content-type': 'application/json' }),
        );
        expect(r.status).toBe(200);
        return extra.stream ? r.text() : r.json();
      };
      const [g, w] = [await ask(gpu), await ask(ref)];
      expect(g.choices).toHaveLength(3);
      expect(g.choices).toEqual(w.choices);
      expect(g.usage).toEqual(w.usage);
      // streamed: the same text per choice, in order
      const texts = (sse: string) =>
        [0, 1, 2].map((i) =>
          sse
            .split('\n\n')
            .filter((e) => e.startsWith('data: {'))
            .map((e) => JSON.parse(e.slice(6)).choices[0])
            .filter((c) => c?.index === i)
            .map((c) => c.delta?.content ?? '')
            .join(''),
        );
      expect(texts(await ask(gpu, { stream: true }))).toEqual(
        w.choices.map((c: { message: { content: string } }) => c.message.content),
      );
    });

    // The same backend checks on two devices without a GPU: the kernels' CPU emulation (the
    // addon's emulate option) and the kernels' own sources on the CPU simulation (addon-sim).
    const devices = [
      { name: 'CPU emulation', addon: ADDON, emulate: true, device: /^CPU emulation$/ },
      { name: 'CPU simulation of the kernel sources', addon: SIM_ADDON, emulate: false, device: /^bn_sim / },
    ];

    it('the addon builds against the CPU simulation (gpu-lambda/addon-sim) and reports that device', async () => {
      // Its make sim-lib shares build/sim with the simulation's plain build: never both at once.
      await simRuns?.plainBuild;
      const gyp = join(ROOT, 'node_modules/.bin/node-gyp');
      const r = run(gyp, ['rebuild', '--directory', SIM_ADDON_DIR, '-j', '2', ...nodedirArgs()]);
      expect(r.code, r.out.slice(-4000)).toBe(0);
      const sim = loadCudaAddon({ path: SIM_ADDON, probeDevice: false }).addon;
      const q = sim.queryDevice(0);
      expect(q.ok, JSON.stringify(q)).toBe(true);
      expect(q).toMatchObject({ name: expect.stringMatching(/^bn_sim /), ccMajor: 9, smCount: 132 });
    }, 300_000);

    it.each(devices)(
      'on the $name, logits equal the reference backend (prefill, decode, concurrent sequences)',
      async (dev) => {
        const model = await bitnetModel(9);
        const ref = new ReferenceBackend(model);
        const cuda = new CudaBackend(model, {
          addonPath: dev.addon,
          emulate: dev.emulate,
          maxSeqs: 4,
          maxBatchTokens: 32,
          maxCtx: 64,
        });
        expect(cuda.info().deviceName).toMatch(dev.device);
        const V = model.hparams.nVocab;
        const prompts = [
          [5, 77, 140, 9, 201, 33],
          [12, 250, 4, 4, 180],
        ];
        // Reference: each prompt then 4 greedy decode steps, one sequence at a time.
        const argmax = (x: Float32Array) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);
        const refRuns: Float32Array[][] = [];
        for (const p of prompts) {
          const kv = refKV();
          const rows: Float32Array[] = [];
          let [last] = await ref.forward({ tokens: p, startPos: 0, kv, logits: 'last' });
          rows.push(last);
          for (let s = 0; s < 4; s++) {
            [last] = await ref.forward({ tokens: [argmax(last)], startPos: p.length + s, kv, logits: 'last' });
            rows.push(last);
          }
          refRuns.push(rows);
        }
        // CUDA backend: both sequences concurrently (their steps share engine batches).
        const runs = await Promise.all(
          prompts.map(async (p) => {
            const kv = newKV();
            const rows: Float32Array[] = [];
            let [last] = await cuda.forward({ tokens: p, startPos: 0, kv, logits: 'last' });
            rows.push(Float32Array.from(last));
            for (let s = 0; s < 4; s++) {
              [last] = await cuda.forward({ tokens: [argmax(last)], startPos: p.length + s, kv, logits: 'last' });
              rows.push(Float32Array.from(last));
            }
            return rows;
          }),
        );
        for (let i = 0; i < prompts.length; i++)
          for (let s = 0; s < runs[i].length; s++) {
            expect(runs[i][s].length).toBe(V);
            expect(
              Buffer.compare(Buffer.from(runs[i][s].buffer), Buffer.from(refRuns[i][s].buffer)),
              `sequence ${i} step ${s}`,
            ).toBe(0);
          }
        // 'all' logits (tensor-core head rows beyond 8): equal within 1e-5.
        const allRef = await ref.forward({
          tokens: [...prompts[0], 3, 8, 13, 21],
          startPos: 0,
          kv: refKV(),
          logits: 'all',
        });
        const allCuda = await cuda.forward({
          tokens: [...prompts[0], 3, 8, 13, 21],
          startPos: 0,
          kv: newKV(),
          logits: 'all',
        });
        expect(allCuda.length).toBe(allRef.length);
        let worst = 0;
        for (let r = 0; r < allRef.length; r++)
          for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(allCuda[r][v] - allRef[r][v]));
        expect(worst).toBeLessThan(1e-5);
        // Rewinding a sequence (startPos < length) and an impossible startPos.
        const kv = newKV();
        await cuda.forward({ tokens: prompts[1], startPos: 0, kv, logits: 'last' });
        const [again] = await cuda.forward({ tokens: [prompts[1][2]], startPos: 2, kv, logits: 'last' });
        const [want] = await ref.forward({ tokens: prompts[1].slice(0, 3), startPos: 0, kv: refKV(), logits: 'last' });
        expect(Buffer.compare(Buffer.from(Float32Array.from(again).buffer), Buffer.from(want.buffer))).toBe(0);
        await expect(cuda.forward({ tokens: [1], startPos: 10, kv: noKV, logits: 'last' })).rejects.toMatchObject({
          code: 'CUDA_SEQUENCE_STATE',
        });
        cuda.dispose();
      },
    );

    it.each(devices)(
      "numerics 'fast' on the $name: decode logits near the reference, greedy tokens equal; bad values refused",
      async (dev) => {
        const model = await bitnetModel(9);
        expect(
          () => new CudaBackend(model, { addonPath: dev.addon, emulate: dev.emulate, numerics: 'bogus' as 'fast' }),
        ).toThrow(expect.objectContaining({ code: 'CUDA_INVALID_ARGUMENT' }));
        const ref = new ReferenceBackend(model);
        const fast = new CudaBackend(model, {
          addonPath: dev.addon,
          emulate: dev.emulate,
          maxSeqs: 2,
          maxCtx: 64,
          numerics: 'fast',
        });
        const argmax = (x: Float32Array) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);
        const prompt = [5, 77, 140, 9, 201, 33];
        const kvR = refKV();
        const kvF = newKV();
        let [r] = await ref.forward({ tokens: prompt, startPos: 0, kv: kvR, logits: 'last' });
        let [f] = await fast.forward({ tokens: prompt, startPos: 0, kv: kvF, logits: 'last' });
        let worst = 0;
        let peak = 0;
        for (let s = 0; s < 6; s++) {
          const next = argmax(r);
          expect(argmax(Float32Array.from(f)), `step ${s}`).toBe(next); // decode steps run the fast kernels
          [r] = await ref.forward({ tokens: [next], startPos: prompt.length + s, kv: kvR, logits: 'last' });
          [f] = await fast.forward({ tokens: [next], startPos: prompt.length + s, kv: kvF, logits: 'last' });
          for (let v = 0; v < r.length; v++) {
            worst = Math.max(worst, Math.abs(f[v] - r[v]));
            peak = Math.max(peak, Math.abs(r[v]));
          }
        }
        // f32-level changes in attention, amplified now and then into an int8 rounding step.
        expect(worst).toBeLessThan(0.05 * peak);
        fast.dispose();
      },
    );

    // Completion texts per device: the simulation must serve the emulation's greedy texts.
    const served = new Map<string, string[]>();
    it.each(devices)(
      'gpu-lambda/server.ts serves the app on the cuda backend ($name), concurrent requests batched',
      async (dev) => {
        const dir = mkdtempSync(join(tmpdir(), 'bitnet-gpu-'));
        const path = join(dir, 'tiny.gguf');
        writeFileSync(path, await synthBytes({ qtype: 'i2_s', seed: 4, arch: 'bitnet-b1.58' }));
        const saved = process.env.BITNET_CUDA_EMULATE;
        const savedAddon = process.env.BITNET_CUDA_ADDON;
        process.env.BITNET_CUDA_EMULATE = dev.emulate ? '1' : '0';
        const { startGpuServer, startupInfo } = await import('../../gpu-lambda/server.ts');
        const { server, model } = await startGpuServer({ BITNET_MODEL: path, PORT: '0', BITNET_CUDA_ADDON: dev.addon });
        try {
          expect(model.engine.backendName).toBe('cuda');
          // The device behind it (the InferenceEngine's core holds the backend).
          const core = (model.engine as unknown as { engine: { backend: { info(): { deviceName: string } } } }).engine;
          expect(core.backend.info().deviceName).toMatch(dev.device);
          const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
          const id = models.data[0].id;
          // the startup line names the id clients must send
          expect(startupInfo(server, model, {}).model).toBe(id);
          expect(startupInfo(server, model, { BITNET_MODEL_ID: 'x' }).model).toBe('x');
          const ask = (prompt: string) =>
            fetch(`${server.url}/v1/completions`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ model: id, prompt, max_tokens: 6, temperature: 0 }),
            });
          const [a, b] = await Promise.all([ask('hello world'), ask('the quick brown fox')]);
          expect(a.status).toBe(200);
          expect(b.status).toBe(200);
          type Completion = { choices: { text: string }[]; usage: { completion_tokens: number } };
          const ja = (await a.json()) as Completion;
          const jb = (await b.json()) as Completion;
          expect(ja.usage.completion_tokens).toBeGreaterThan(0);
          expect(jb.usage.completion_tokens).toBeGreaterThan(0);
          const texts = [ja.choices[0].text, jb.choices[0].text];
          served.set(dev.name, texts);
          const first = served.get(devices[0].name);
          if (dev !== devices[0]) expect(texts, 'the same greedy texts as on the emulation').toEqual(first);
        } finally {
          await server.close();
          if (saved === undefined) delete process.env.BITNET_CUDA_EMULATE;
          else process.env.BITNET_CUDA_EMULATE = saved;
          if (savedAddon === undefined) delete process.env.BITNET_CUDA_ADDON;
          else process.env.BITNET_CUDA_ADDON = savedAddon;
          rmSync(dir, { recursive: true, force: true });
        }
      },
    );
  });
});

/** A dense f16 KV store for the reference backend. */
function refKV(): KVStore {
  const k = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  return {
    write: (l, p, kk, vv) => {
      k.set(`${l}:${p}`, Float32Array.from(kk, f16r));
      v.set(`${l}:${p}`, Float32Array.from(vv, f16r));
    },
    readK: (l, p, out) => out.set(k.get(`${l}:${p}`)!),
    readV: (l, p, out) => out.set(v.get(`${l}:${p}`)!),
  };
}
