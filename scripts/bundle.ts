// esbuild bundles for the runtimes that take one file:
//   dist/worker/index.js   the Cloudflare Worker (wrangler.toml `main`; `npx wrangler deploy` runs this first)
//   dist/lambda/index.mjs  the AWS Lambda function (handler: index.handler), Node 22, ESM
// The Worker bundle must not contain Node-only code. The core reaches Node-only modules (local
// files, the disk cache, the AWS SDK, the Hugging Face cache) through lazy `import()`s that a
// bundler still follows; in the Worker build, every dynamically imported module that itself
// imports node:*, @aws-sdk/* or @smithy/* is replaced by a stub whose exports throw
// UNSUPPORTED_SOURCE when used. A static import of such code is not stubbed: the build fails if
// any `node:` import is left. Kernel .wasm files are copied next to the bundle and stay module
// imports (wrangler's CompiledWasm rule).
//
// Usage: node scripts/bundle.ts [--worker] [--lambda] [--outdir DIR]   (both when neither is given)
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build, type Plugin } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const NODE_ONLY_IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s*['"](?:node:|@aws-sdk\/|@smithy\/)|(?:^|\n)\s*import\s*['"]node:/;

/** Runtime export names of a TS module (type-only exports need no stub). */
function exportNames(src: string): string[] {
  const names = new Set<string>();
  for (const m of src.matchAll(
    /export\s+(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?(?:function\*?|class|const|let|var)\s+([A-Za-z_$][\w$]*)/g,
  ))
    names.add(m[1]);
  for (const m of src.matchAll(/export\s*\{([^}]*)\}/g)) {
    for (const part of m[1].split(',')) {
      const p = part.trim();
      if (!p || p.startsWith('type ')) continue;
      names.add(
        p
          .split(/\s+as\s+/)
          .pop()!
          .trim(),
      );
    }
  }
  return [...names];
}

const stubNodeOnly: Plugin = {
  name: 'bitnet-worker-stub-node-only',
  setup(b) {
    b.onResolve({ filter: /\.ts$/ }, async (args) => {
      if (args.kind !== 'dynamic-import' || args.pluginData?.bitnetSkip) return undefined;
      const r = await b.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        resolveDir: args.resolveDir,
        pluginData: { bitnetSkip: true },
      });
      if (r.errors.length > 0 || !NODE_ONLY_IMPORT.test(await readFile(r.path, 'utf8'))) return r;
      return { path: r.path, namespace: 'bitnet-worker-stub' };
    });
    b.onLoad({ filter: /.*/, namespace: 'bitnet-worker-stub' }, async (args) => {
      const rel = relative(root, args.path);
      const stubs = exportNames(await readFile(args.path, 'utf8')).map(
        (n) => `export const ${n} = unavailable(${JSON.stringify(n)});`,
      );
      return {
        loader: 'js',
        resolveDir: root,
        contents: `import { BitNetError } from ${JSON.stringify(join(root, 'src/errors.ts'))};
const unavailable = (name) => {
  const fail = () => { throw BitNetError.Io('UNSUPPORTED_SOURCE', ${JSON.stringify(rel)} + ' (' + name + ') needs Node and is not in the Worker bundle: load the model from R2 or https', { module: ${JSON.stringify(rel)} }); };
  return new Proxy(function () {}, { get: (_, p) => (p === 'then' ? undefined : fail()), apply: fail, construct: fail });
};
${stubs.join('\n')}`,
      };
    });
  },
};

export interface BundleResult {
  worker?: string;
  lambda?: string;
}

export async function bundle(
  opts: { worker?: boolean; lambda?: boolean; outdir?: string } = {},
): Promise<BundleResult> {
  const both = !opts.worker && !opts.lambda;
  const outdir = resolve(opts.outdir ?? join(root, 'dist'));
  const out: BundleResult = {};
  if (opts.worker || both) {
    const outfile = join(outdir, 'worker', 'index.js');
    await build({
      entryPoints: [join(root, 'src/adapters/cloudflare.ts')],
      outfile,
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      target: 'es2023',
      conditions: ['workerd', 'worker', 'browser', 'import'],
      mainFields: ['module', 'main'],
      // Kernel builds: copied next to the bundle and imported as modules (wrangler's CompiledWasm rule).
      loader: { '.wasm': 'copy' },
      assetNames: '[name]',
      plugins: [stubNodeOnly],
      minify: true,
      keepNames: true,
      legalComments: 'none',
      logLevel: 'warning',
    });
    const code = await readFile(outfile, 'utf8');
    const left = [...code.matchAll(/\b(?:from\s*|import\s*\(\s*)["'](node:[^"']+)["']/g)].map((m) => m[1]);
    if (left.length) throw new Error(`the Worker bundle imports Node modules: ${[...new Set(left)].join(', ')}`);
    out.worker = outfile;
  }
  if (opts.lambda || both) {
    const outfile = join(outdir, 'lambda', 'index.mjs');
    await build({
      // The adapter, plus the kernel builds embedded as bytes and registered with the wasm loader
      // (the loader's own lookup reads wasm/build/ next to the sources, which a bundle does not have).
      stdin: {
        contents: [
          `import relaxed from ${JSON.stringify(join(root, 'wasm/build/bitnet-relaxed.wasm'))};`,
          `import simd from ${JSON.stringify(join(root, 'wasm/build/bitnet-simd.wasm'))};`,
          `import { registerKernelModules } from ${JSON.stringify(join(root, 'src/kernels/wasm/loader.ts'))};`,
          'registerKernelModules({ relaxed, simd });',
          `export * from ${JSON.stringify(join(root, 'src/adapters/aws-lambda.ts'))};`,
        ].join('\n'),
        resolveDir: root,
        sourcefile: 'lambda-entry.js',
        loader: 'js',
      },
      outfile,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node22',
      loader: { '.wasm': 'binary' },
      // Some dependencies are CommonJS; give them `require` inside the ESM bundle.
      banner: {
        js: "import { createRequire as __bitnetCreateRequire } from 'node:module'; const require = __bitnetCreateRequire(import.meta.url);",
      },
      legalComments: 'none',
      logLevel: 'warning',
    });
    out.lambda = outfile;
  }
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: { worker: { type: 'boolean' }, lambda: { type: 'boolean' }, outdir: { type: 'string' } },
  });
  const r = await bundle(values);
  for (const [k, v] of Object.entries(r)) console.error(`${k}: ${v}`);
}
