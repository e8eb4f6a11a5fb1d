/**
 * `npm run bench`: ours (`bitnet bench`, wasm backend) and llama.cpp (node-llama-cpp 3.21.1 from
 * test/oracle/llama, bench/llama-bench.mjs) in the same run, same method, same files, at 1 and 2
 * threads, on a 2B-4T-shaped TQ2_0 file and the `large` shape (both with a Q6_K embedding/head,
 * SiLU), then the kernel micro-benchmark. Prints a table of ratios and one JSON object.
 *
 *   node bench/run.ts [--prompt 128] [--gen 64] [--runs 3] [--threads 1,2] [--parallel 1] [--shapes 2b-4t,large] [--no-llama] [--no-micro]
 *
 * `--parallel 1,4` adds rows with 4 sequences decoding at once (a server with 4 requests in
 * flight): ours batches their steps (wasm backend), llama.cpp evaluates them on one context with 4
 * sequences (node-llama-cpp batches concurrent evaluations). Decode tok/s is then the sum over the
 * sequences.
 *
 * Each measurement is a fresh child process (clean RSS); ours and llama.cpp alternate per thread
 * count so machine-load drift hits both alike. Synthetic files are made once under .cache/bench/.
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
      threads: { type: 'string', default: '1,2' },
      parallel: { type: 'string', default: '1' },
      shapes: { type: 'string', default: '2b-4t,large' },
      'no-llama': { type: 'boolean' },
      'no-micro': { type: 'boolean' },
    },
  });
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
        console.error(`[bench] ${what}: ours ...`);
        const ours = lastJson(
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
        );
        let llama: Record<string, number> | undefined;
        if (llamaOk) {
          console.error(`[bench] ${what}: llama.cpp ...`);
          llama = lastJson(await run(['bench/llama-bench.mjs', file, ...common]));
        }
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
          rssOverFile: ours.peakRssBytes / ours.fileBytes,
          decodeRssOverFile: ours.decodeRssBytes / ours.fileBytes,
        });
      }
  }
  const microRows = values['no-micro'] ? [] : micro();
  const f = (x: number | undefined, d = 2) => (x === undefined ? '-' : x.toFixed(d));
  console.log(
    '\nshape   thr par | ours prefill decode | llama.cpp prefill decode | ratio prefill decode | peak RSS / file',
  );
  for (const r of rows as {
    shape: string;
    threads: number;
    parallel: number;
    ours: Record<string, number>;
    llama?: Record<string, number>;
    ratios?: Record<string, number>;
    rssOverFile: number;
  }[]) {
    console.log(
      `${r.shape.padEnd(7)} ${String(r.threads).padStart(3)} ${String(r.parallel).padStart(3)} | ${f(r.ours.prefillTokensPerSecond).padStart(12)} ${f(r.ours.decodeTokensPerSecond).padStart(6)} | ` +
        `${f(r.llama?.prefillTokensPerSecond).padStart(17)} ${f(r.llama?.decodeTokensPerSecond).padStart(6)} | ` +
        `${f(r.ratios?.prefill).padStart(13)} ${f(r.ratios?.decode).padStart(6)} | ${f(r.rssOverFile)}`,
    );
  }
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
