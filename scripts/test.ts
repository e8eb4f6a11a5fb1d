// `npm test`: every vitest project in turn (Node; the Worker tests inside workerd; R2 inside
// workerd), then one plain closing line summing them all: "tests: N passed, N failed, N skipped".
// Exits non-zero if any run failed. Extra arguments go to every vitest run.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  console.error(`bitnet-edge needs Node >= 22 (running ${process.version}). Run through npm (npm test) after npm ci.`);
  process.exit(1);
}

const configs = [undefined, 'test/http/workers/vitest.config.ts', 'test/sources/workers/vitest.config.ts'];
const dir = mkdtempSync(join(tmpdir(), 'bitnet-test-'));
const vitest = join('node_modules', 'vitest', 'vitest.mjs');
let passed = 0;
let failed = 0;
let skipped = 0;
let bad = false;
configs.forEach((config, i) => {
  const out = join(dir, `run${i}.json`);
  const args = [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`];
  if (config) args.push('--config', config);
  // A file filter may match nothing in some projects: that is not a failure then.
  const extra = process.argv.slice(2);
  if (extra.length) args.push('--passWithNoTests');
  const r = spawnSync(process.execPath, [...args, ...extra], { stdio: 'inherit' });
  if (r.status !== 0) bad = true;
  try {
    const j = JSON.parse(readFileSync(out, 'utf8')) as {
      numPassedTests: number;
      numFailedTests: number;
      numPendingTests: number;
      numTodoTests: number;
    };
    passed += j.numPassedTests;
    failed += j.numFailedTests;
    skipped += j.numPendingTests + j.numTodoTests;
  } catch {
    bad = true; // the run died before writing its report
  }
});
rmSync(dir, { recursive: true, force: true });
if (bad && failed === 0) failed = 1;
console.log(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(bad ? 1 : 0);
