/**
 * `npm run bench`: ours (`bitnet bench`, wasm backend) and llama.cpp (node-llama-cpp 3.21.1 from
 * test/oracle/llama, bench/llama-bench.mjs) in the same run, same method, same files, at 1 and 2
 * threads, on a 2B-4T-shaped TQ2_0 file and the `large` shape (both with a Q6_K embedding/head,
 * SiLU), then the kernel micro-benchmark. Prints a table of ratios and one JSON object.
 *
 *   node bench/run.ts [--prompt 128] [--gen 64] [--runs 3] [--rounds 1] [--threads 1,2] [--parallel 1] [--shapes 2b-4t,large] [--no-llama] [--no-micro]
 *
 * `--parallel 1,4` adds rows with 4 sequences decoding at once (a server with 4 requests in
 * flight): ours batches their steps (wasm backend), llama.cpp evaluates them on one context with 4
 * sequences (node-llama-cpp batches concurrent evaluations). Decode tok/s is then the sum over the
 * sequences.
 *
 * Each measurement is a fresh child process (clean RSS) that times `--runs` runs; ours and
 * llama.cpp alternate per thread count so machine-load drift hits both alike. `--rounds N` repeats
 * each pair N times, ours and llama.cpp in turn, and pools their runs: a burst of load on a shared
 * machine then lands on both sides. Each side's rate is the median of its runs, and `spread`
 * (the fastest run over the slowest) says how steady they were: a row whose spread is over 1.25
 * is marked in the table. Synthetic files are made once under .cache/bench/.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { micro } from './micro.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cacheDir = join(root, '.cache', 'bench');

function run(args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('close', (code) =>
      code === 0
        ? res(Buffer.concat(out).toString())
        : rej(new Error(`${args.join(' ')} exited ${code}\n${Buffer.concat(err).toString().slice(-3000)}`)),
    );
  });
}

type Side = Record<string, unknown> & {
  prefillRuns: number[];
  decodeRuns: number[];
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  peakRssBytes: number;
};

const median = (xs: number[]): number => {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

/** One side's rounds as one measurement: the runs pooled, rates their medians, the largest RSS. */
function pool(rounds: Side[]): Side {
  if (rounds.length === 1) return rounds[0]; // the child's own figures, as they were
  const prefillRuns = rounds.flatMap((r) => r.prefillRuns);
  const decodeRuns = rounds.flatMap((r) => r.decodeRuns);
  const out: Side = {
    ...rounds[0],
    runs: prefillRuns.length,
    prefillRuns,
    decodeRuns,
    prefillTokensPerSecond: median(prefillRuns),
    decodeTokensPerSecond: median(decodeRuns),
    peakRssBytes: Math.max(...rounds.map((r) => r.peakRssBytes)),
  };
  for (const k of ['decodeRssBytes'])
    if (typeof rounds[0][k] === 'number') out[k] = Math.max(...rounds.map((r) => r[k] as number));
  for (const k of ['prefillCpuMsPerToken', 'decodeCpuMsPerToken'])
    if (typeof rounds[0][k] === 'number') out[k] = rounds.reduce((a, r) => a + (r[k] as number), 0) / rounds.length;
  return out;
}

/** The fastest run over the slowest (1 = all equal). */
const spreadOf = (runs: number[]) => Math.max(...runs) / Math.min(...runs);
const NOISY = 1.25;

const lastJson = (s: string) =>
  JSON.parse(
    s
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop()!,
  );

async function ensureFile(shape: string): Promise<string> {
  mkdirSync(cacheDir, { recursive: true });
  const file = join(cacheDir, `${shape}-tq2_0-q6_k.gguf`.replace('2b-4t', '2b4t'));
  if (!existsSync(file)) {
    console.error(`[bench] synthesizing ${file} ...`);
    await run([
      'bin/bitnet.js',
      'synth',
      '--preset',
      shape,
      '--qtype',
      'tq2_0',
      '--embd-type',
      'q6_k',
      '--activation',
      'silu',
      '--seed',
      '1',
      '--out',
      file,
    ]);
  }
  return file;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      prompt: { type: 'string', default: '128' },
      gen: { type: 'string', default: '64' },
      runs: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '1' },
      threads: { type: 'string', default: '1,2' },
      parallel: { type: 'string', default: '1' },
      shapes: { type: 'string', default: '2b-4t,large' },
      'no-llama': { type: 'boolean' },
      'no-micro': { type: 'boolean' },
    },
  });
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) {
    console.error(`bench: --rounds must be an integer from 1 to 20 (got ${values.rounds})`);
    process.exit(2);
  }
  const threads = values.threads!.split(',').map(Number);
  const parallels = values.parallel!.split(',').map(Number);
  const shapes = values.shapes!.split(',');
  let llamaOk = !values['no-llama'];
  if (llamaOk) {
    try {
      const { ensureOracleInstalled } = await import('../test/oracle/oracle-setup.ts');
      await ensureOracleInstalled();
    } catch (e) {
      console.error(`[bench] llama.cpp side unavailable: ${(e as Error).message.split('\n')[0]}`);
      llamaOk = false;
    }
  }
  const rows: Record<string, unknown>[] = [];
  for (const shape of shapes) {
    const file = await ensureFile(shape);
    for (const t of threads)
      for (const p of parallels) {
        const common = [String(t), values.prompt!, values.gen!, values.runs!, String(p)];
        const what = `${shape} ${t} thread(s)${p > 1 ? `, ${p} sequences` : ''}`;
        const oursRounds: Side[] = [];
        const llamaRounds: Side[] = [];
        for (let round = 1; round <= rounds; round++) {
          const of = rounds > 1 ? ` (round ${round} of ${rounds})` : '';
          console.error(`[bench] ${what}: ours${of} ...`);
          oursRounds.push(
            lastJson(
              await run([
                'bin/bitnet.js',
                'bench',
                '--model',
                file,
                '--threads',
                String(t),
                '--prompt',
                values.prompt!,
                '--gen',
                values.gen!,
                '--runs',
                values.runs!,
                '--parallel',
                String(p),
                '--json',
              ]),
            ),
          );
          if (llamaOk) {
            console.error(`[bench] ${what}: llama.cpp${of} ...`);
            llamaRounds.push(lastJson(await run(['bench/llama-bench.mjs', file, ...common])));
          }
        }
        const ours = pool(oursRounds);
        const llama = llamaRounds.length ? pool(llamaRounds) : undefined;
        const spread = (x: Side) => ({ prefill: spreadOf(x.prefillRuns), decode: spreadOf(x.decodeRuns) });
        rows.push({
          shape,
          file,
          threads: t,
          parallel: p,
          ours,
          llama,
          ratios: llama
            ? {
                prefill: ours.prefillTokensPerSecond / llama.prefillTokensPerSecond,
                decode: ours.decodeTokensPerSecond / llama.decodeTokensPerSecond,
              }
            : undefined,
          spread: { ours: spread(ours), llama: llama ? spread(llama) : undefined },
          rssOverFile: ours.peakRssBytes / (ours.fileBytes as number),
          decodeRssOverFile: (ours.decodeRssBytes as number) / (ours.fileBytes as number),
        });
      }
  }
  const microRows = values['no-micro'] ? [] : micro();
  const f = (x: number | undefined, d = 2) => (x === undefined ? '-' : x.toFixed(d));
  console.log(
    '\nshape   thr par | ours prefill decode | llama.cpp prefill decode | ratio prefill decode | peak RSS / file',
  );
  let noisy = false;
  for (const r of rows as {
    shape: string;
    threads: number;
    parallel: number;
    ours: Record<string, number>;
    llama?: Record<string, number>;
    ratios?: Record<string, number>;
    rssOverFile: number;
    spread: Record<'ours' | 'llama', Record<'prefill' | 'decode', number> | undefined>;
  }[]) {
    const worst = Math.max(...[r.spread.ours, r.spread.llama].flatMap((x) => (x ? [x.prefill, x.decode] : [])));
    const mark = worst > NOISY ? ' *' : '';
    if (mark) noisy = true;
    console.log(
      `${r.shape.padEnd(7)} ${String(r.threads).padStart(3)} ${String(r.parallel).padStart(3)} | ${f(r.ours.prefillTokensPerSecond).padStart(12)} ${f(r.ours.decodeTokensPerSecond).padStart(6)} | ` +
        `${f(r.llama?.prefillTokensPerSecond).padStart(17)} ${f(r.llama?.decodeTokensPerSecond).padStart(6)} | ` +
        `${f(r.ratios?.prefill).padStart(13)} ${f(r.ratios?.decode).padStart(6)} | ${f(r.rssOverFile)}${mark}`,
    );
  }
  if (noisy)
    console.log(
      `* a side's runs spread more than ${NOISY}x (fastest over slowest; "spread" in the JSON): the machine was not steady, run again or add --rounds`,
    );
  if (microRows.length) {
    console.log('\nkernel micro-benchmark (GOP/s, one thread)');
    for (const x of microRows)
      console.log(
        `${x.build.padEnd(8)} ${x.kernel.padEnd(10)} ${x.n}x${x.k} m=${String(x.m).padEnd(3)} ${x.gops.toFixed(1).padStart(7)}`,
      );
  }
  console.log(`\n${JSON.stringify({ results: rows, micro: microRows })}`);
}

await main();
