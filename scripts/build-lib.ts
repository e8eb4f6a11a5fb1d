// `npm run build` (and `npm pack`, through "prepare"): the package's compiled form in lib/.
// Node strips TypeScript types only outside node_modules, so an installed bitnet-edge must ship
// JavaScript; its declarations let TypeScript users type-check against it. The checkout itself
// runs src/ (the "bitnet-edge-source" export condition, set in tsconfig.json and vitest's config).
// The build then adds lib/worker/ (scripts/bundle.ts --worker --outdir lib): the Worker bundle
// that `bitnet-edge/cloudflare` resolves to under wrangler's "workerd" condition, with the
// Node-only modules stubbed out, which a consumer's own bundling of lib/ would not do.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';

const root = new URL('../', import.meta.url);
rmSync(new URL('lib/', root), { recursive: true, force: true }); // no files left from deleted sources
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);
for (const f of ['lib/index.js', 'lib/index.d.ts', 'lib/cli/command-line.js']) {
  if (!existsSync(new URL(f, root))) {
    console.error(`build-lib: ${f} was not written`);
    process.exit(1);
  }
}
