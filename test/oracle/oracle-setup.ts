/**
 * The llama.cpp oracle for tests: installs test/oracle/llama on demand (its own package.json and
 * lockfile, outside the main dependency tree) and runs its probs.mjs as a child process.
 *
 * Everything fails loudly: a failed install or a llama.cpp that cannot load throws, never skips.
 * Child processes use process.execPath, the Node 22 that runs the tests.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquireLock } from '../../src/sources/hf-hub-cache.ts';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(here, '../..');
export const ORACLE_DIR = join(here, 'llama');
const PINNED = (
  JSON.parse(readFileSync(join(ORACLE_DIR, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }
).dependencies['node-llama-cpp'];

/** Runs a command and resolves with stdout; rejects with stderr on a non-zero exit. */
function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? REPO_ROOT,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) return resolvePromise(Buffer.concat(out).toString('utf8'));
      const tail = Buffer.concat(err).toString('utf8').slice(-4000);
      reject(new Error(`${cmd} ${args.join(' ').slice(0, 300)} exited with ${code ?? signal}\n${tail}`));
    });
  });
}

/** Runs a script (TS or JS) with the test's own Node binary. */
export function runNode(script: string, args: string[], cwd = REPO_ROOT): Promise<string> {
  return run(process.execPath, [script, ...args], { cwd });
}

function installedVersion(): string | undefined {
  const pkg = join(ORACLE_DIR, 'node_modules', 'node-llama-cpp', 'package.json');
  // npm writes node_modules/.package-lock.json last: without it the install was interrupted.
  if (!existsSync(pkg) || !existsSync(join(ORACLE_DIR, 'node_modules', '.package-lock.json'))) return undefined;
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

let installing: Promise<void> | undefined;

/**
 * `npm ci` in test/oracle/llama unless the pinned node-llama-cpp is already there. Several test
 * files need the oracle and may run at once: one installs under a lock, the others wait for it
 * and then find it installed.
 */
export function ensureOracleInstalled(): Promise<void> {
  installing ??= (async () => {
    if (installedVersion() === PINNED) return;
    // The hub cache's lock between processes (pid and host inside; a dead holder's is taken over).
    const lock = await acquireLock(join(ORACLE_DIR, '.install-lock'));
    try {
      await installOracle();
    } finally {
      await lock.release();
    }
  })();
  return installing;
}

/**
 * --ignore-scripts: node-llama-cpp's postinstall may compile llama.cpp from source for minutes;
 * the prebuilt CPU binary needs no script, and probs.mjs uses build: 'never' so a missing binary
 * is an error.
 */
async function installOracle(): Promise<void> {
  if (installedVersion() === PINNED) return; // another process installed it while this one waited
  const t0 = performance.now();
  // Prefer the npm that started the tests (npm test sets npm_execpath), run under this Node.
  const npmCli = process.env.npm_execpath;
  const [cmd, pre] = npmCli?.endsWith('.js') ? [process.execPath, [npmCli]] : ['npm', []];
  // Keep the outer npm's settings (registry, proxy, cache, cafile) but not its project root.
  const env = { ...process.env };
  delete env.npm_config_local_prefix;
  await run(cmd, [...pre, 'ci', '--prefix', ORACLE_DIR, '--ignore-scripts', '--no-audit', '--no-fund'], {
    cwd: ORACLE_DIR,
    env,
  });
  const got = installedVersion();
  if (got !== PINNED) throw new Error(`llama oracle install gave node-llama-cpp ${got}, expected ${PINNED}`);
  console.log(`[oracle] npm ci in test/oracle/llama took ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

export interface OracleRun {
  ids: number[];
  /** probs[i][t]: llama.cpp's probability of token t after ids[0..i]. */
  probs: number[][];
}

/** llama.cpp's next-token distributions at every position of every prompt (no BOS added). */
export async function llamaProbs(
  modelPath: string,
  prompts: number[][],
): Promise<{ nVocab: number; runs: OracleRun[] }> {
  await ensureOracleInstalled();
  const dir = await mkdtemp(join(tmpdir(), 'bitnet-oracle-'));
  try {
    const listFile = join(dir, 'prompts.json');
    await writeFile(listFile, JSON.stringify(prompts));
    const out = await runNode(join(ORACLE_DIR, 'probs.mjs'), [modelPath, `@${listFile}`], ORACLE_DIR);
    return JSON.parse(out) as { nVocab: number; runs: OracleRun[] };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
