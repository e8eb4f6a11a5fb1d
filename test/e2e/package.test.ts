// The package as a user installs it. `npm pack` (its "prepare" script builds lib/) makes the
// tarball, which is unpacked under a consumer's node_modules, where Node refuses to strip
// TypeScript types (ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING): everything there must run as
// the JavaScript and declarations the package ships. The consumer's other dependencies are links
// to this checkout's node_modules (no network).
import { execFile, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BitNetModel, GenerationConfig } from '../../src/index.ts';
import { synthBytes } from '../helpers/models.ts';
import { bundledWorker } from '../helpers/worker.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
let tmp: string;
let consumer: string;
let installed: string;
let files: string[];

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'bitnet-pkg-'));
  const packed = spawnSync('npm', ['pack', '--pack-destination', tmp, '--json'], {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  expect(packed.status, packed.stderr).toBe(0);
  const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  files = info.files.map((f) => f.path);
  consumer = join(tmp, 'consumer');
  installed = join(consumer, 'node_modules', 'bitnet-edge');
  await mkdir(installed, { recursive: true });
  const untar = spawnSync('tar', ['xzf', join(tmp, info.filename), '-C', installed, '--strip-components=1']);
  expect(untar.status, String(untar.stderr)).toBe(0);
  for (const dep of await readdir(join(root, 'node_modules'))) {
    if (dep !== '.bin') await symlink(join(root, 'node_modules', dep), join(consumer, 'node_modules', dep));
  }
  await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  await writeFile(join(consumer, 'm.gguf'), await synthBytes({ qtype: 'i2_s', seed: 8, arch: 'bitnet-b1.58' }));
}, 300_000);
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('the installed package', () => {
  it('ships JavaScript, declarations, both kernel builds and the command; no tests, no TypeScript sources', async () => {
    for (const f of [
      'bin/bitnet.js',
      'lib/index.js',
      'lib/index.d.ts',
      'lib/cli/command-line.js',
      'lib/worker/index.js',
      'wasm/build/bitnet-relaxed.wasm',
      'wasm/build/bitnet-simd.wasm',
      'gpu-lambda/addon/binding.gyp',
    ])
      expect(files).toContain(f);
    expect(
      files.filter((f) => /^(test|src|scripts|bench)\//.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts'))),
    ).toEqual([]);
    // every export resolves to a shipped .js file with its declarations, except the checkout's own condition
    const pkg = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8'));
    for (const [path, target] of Object.entries(pkg.exports as Record<string, Record<string, string> | string>)) {
      if (typeof target === 'string') continue;
      expect([path, files.includes(target.default.slice(2)), files.includes(target.types.slice(2))]).toEqual([
        path,
        true,
        true,
      ]);
    }
  });

  it('`bitnet` runs the compiled code on the wasm kernels and generates what the checkout does', async () => {
    const args = ['generate', '--model', join(consumer, 'm.gguf'), '--prompt-ids', '1,2,3', '--max-tokens', '8'];
    const opts = { cwd: consumer, maxBuffer: 16 << 20 };
    const mine = JSON.parse(
      (await run(process.execPath, [join(installed, 'bin/bitnet.js'), ...args, '--temperature', '0', '--json'], opts))
        .stdout,
    );
    const checkout = JSON.parse(
      (await run(process.execPath, [join(root, 'bin/bitnet.js'), ...args, '--temperature', '0', '--json'], opts))
        .stdout,
    );
    expect(mine.backend).toBe('wasm');
    expect(mine.tokenIds).toHaveLength(8);
    expect(mine.tokenIds).toEqual(checkout.tokenIds);
    // usage errors keep their typed form from the compiled CLI
    const bad = await run(process.execPath, [join(installed, 'bin/bitnet.js'), 'generate', '--bogus'], opts).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad?.code).toBe(2);
    expect(bad?.stderr).toContain('Config/BAD_FLAG');
  });

  it("a user's program imports every Node entry point by name and generates the checkout's text", async () => {
    await writeFile(
      join(consumer, 'use.mjs'),
      [
        "import { BitNetModel, GenerationConfig } from 'bitnet-edge';",
        "import { createApp } from 'bitnet-edge/http';",
        "import { serveNode } from 'bitnet-edge/node';",
        "import { createLambdaHandler } from 'bitnet-edge/aws-lambda';",
        "const m = await BitNetModel.fromFile('m.gguf');",
        "const text = await m.generate('Hello', GenerationConfig.greedy().withMaxNewTokens(6));",
        'console.log(JSON.stringify({ text, kinds: [typeof createApp, typeof serveNode, typeof createLambdaHandler] }));',
      ].join('\n'),
    );
    const out = JSON.parse((await run(process.execPath, ['use.mjs'], { cwd: consumer })).stdout);
    expect(out.kinds).toEqual(['function', 'function', 'function']);
    const model = await BitNetModel.fromFile(join(consumer, 'm.gguf'));
    expect(out.text).toBe(await model.generate('Hello', GenerationConfig.greedy().withMaxNewTokens(6)));
  });

  it("a Worker project's wrangler bundles bitnet-edge/cloudflare (the shipped Worker build) and it serves from R2", async () => {
    await writeFile(join(consumer, 'worker.mjs'), "export { default } from 'bitnet-edge/cloudflare';\n");
    await writeFile(
      join(consumer, 'wrangler.toml'),
      [
        'name = "consumer"',
        'main = "worker.mjs"',
        'compatibility_date = "2026-08-01"',
        '[[r2_buckets]]',
        'binding = "WEIGHTS"',
        'bucket_name = "weights"',
      ].join('\n'),
    );
    const outdir = join(consumer, 'out');
    const r = spawnSync(
      process.execPath,
      [join(root, 'node_modules/wrangler/bin/wrangler.js'), 'deploy', '--dry-run', '--outdir', outdir],
      {
        cwd: consumer,
        encoding: 'utf8',
        timeout: 120_000,
        env: { ...process.env, WRANGLER_SEND_METRICS: 'false', WRANGLER_HIDE_BANNER: 'true', NO_COLOR: '1' },
      },
    );
    const log = `${r.stdout}${r.stderr}`;
    expect(r.status, log).toBe(0);
    expect(log).not.toMatch(/nodejs_compat|WARNING/); // no Node-only module reached the bundle
    const code = await readFile(join(outdir, 'worker.js'), 'utf8');
    expect(code).not.toMatch(/\bfrom\s*["']node:|\bimport\(\s*["']node:/);
    const wasm = (await readdir(outdir)).filter((f) => f.endsWith('.wasm'));
    expect(wasm.map((f) => f.replace(/^[0-9a-f]+-/, '')).sort()).toEqual(['bitnet-relaxed.wasm', 'bitnet-simd.wasm']);
    const mf = await bundledWorker(
      outdir,
      'worker.js',
      wasm,
      { BITNET_API_KEYS: 'consumer-key', MODEL_ID: 'consumer', MODEL_KEY: 'm.gguf' },
      await readFile(join(consumer, 'm.gguf')),
    );
    try {
      const res = await mf.dispatchFetch('http://worker/v1/completions', {
        method: 'POST',
        headers: { authorization: 'Bearer consumer-key', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'consumer', prompt: [1, 2, 3], max_tokens: 4, temperature: 0 }),
      });
      const body = (await res.json()) as { usage: unknown };
      expect([res.status, res.headers.get('x-bitnet-route')]).toEqual([200, 'edge']);
      expect(body.usage).toMatchObject({ prompt_tokens: 3, completion_tokens: 4 });
    } finally {
      await mf.dispose();
    }
  });

  it('a bundled app (esbuild, one file, no node_modules) registers the exported kernel files and runs them', async () => {
    await writeFile(
      join(consumer, 'app.mjs'),
      [
        "import relaxed from 'bitnet-edge/kernels/bitnet-relaxed.wasm';",
        "import simd from 'bitnet-edge/kernels/bitnet-simd.wasm';",
        "import { BitNetModel, GenerationConfig, registerKernelModules } from 'bitnet-edge';",
        'registerKernelModules({ relaxed, simd });',
        "const m = await BitNetModel.fromFile(process.argv[2], { backend: 'wasm' });",
        "const text = await m.generate('Hello', GenerationConfig.greedy().withMaxNewTokens(6));",
        'console.log(JSON.stringify({ backend: m.engine.backendName, text }));',
      ].join('\n'),
    );
    const bundled = join(tmp, 'bundled'); // outside the consumer: no node_modules to fall back on
    await build({
      entryPoints: [join(consumer, 'app.mjs')],
      absWorkingDir: consumer,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node22',
      outfile: join(bundled, 'app.mjs'),
      loader: { '.wasm': 'binary' },
      banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
      logLevel: 'error',
    });
    const out = JSON.parse(
      (await run(process.execPath, [join(bundled, 'app.mjs'), join(consumer, 'm.gguf')], { cwd: bundled })).stdout,
    );
    const model = await BitNetModel.fromFile(join(consumer, 'm.gguf'));
    expect(out).toEqual({
      backend: 'wasm',
      text: await model.generate('Hello', GenerationConfig.greedy().withMaxNewTokens(6)),
    });
  });

  it('TypeScript users type-check against the shipped declarations (skipLibCheck off)', async () => {
    const tsconfig = {
      compilerOptions: {
        target: 'ES2023',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        types: ['node'],
      },
      include: ['use.ts'],
    };
    await writeFile(join(consumer, 'tsconfig.json'), JSON.stringify(tsconfig));
    const program = (resultType: string) =>
      [
        "import { BitNetError, BitNetModel, GenerationConfig, registerKernelModules } from 'bitnet-edge';",
        "import { createApp } from 'bitnet-edge/http';",
        "import relaxed from 'bitnet-edge/kernels/bitnet-relaxed.wasm';",
        'registerKernelModules({ relaxed });',
        "const m: BitNetModel = await BitNetModel.fromFile('m.gguf');",
        `const t: ${resultType} = await m.generate('Hi', GenerationConfig.greedy().withMaxNewTokens(2));`,
        'const e: BitNetError | undefined = undefined;',
        'console.log(t, e, createApp);',
      ].join('\n');
    const tsc = (cwd: string) =>
      spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', '.'], {
        cwd,
        encoding: 'utf8',
      });
    await writeFile(join(consumer, 'use.ts'), program('string'));
    const good = tsc(consumer);
    expect(good.stdout + good.stderr).toBe('');
    expect(good.status).toBe(0);
    // the declarations carry real types: a wrong one is an error, not `any`
    await writeFile(join(consumer, 'use.ts'), program('number'));
    const wrong = tsc(consumer);
    expect(wrong.status).not.toBe(0);
    expect(wrong.stdout).toContain("error TS2322: Type 'string' is not assignable to type 'number'");
  });
});
