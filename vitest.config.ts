import { availableParallelism } from 'node:os';
import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Tests import `bitnet-edge` by its name and must see the sources, never a build in lib/: the
  // package's "bitnet-edge-source" export condition, ahead of Vite's own for Node (ssr) modules.
  // Without 'module', as vitest's default: these also go to Node as --conditions, and 'module'
  // sends @aws-sdk/* to ESM builds that Node cannot load.
  ssr: {
    resolve: { conditions: ['bitnet-edge-source', ...defaultServerConditions.filter((c) => c !== 'module')] },
  },
  test: {
    include: ['test/**/*.test.ts'],
    // Model-level tests run real forward passes on a 2-core CI machine.
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // Vitest's default (one worker fewer than the cores) runs the files one at a time on 2 cores,
    // and the CPU sits half idle through most of them (a file mostly waits on one child process).
    // Two files at once there; test/gpu/cuda.test.ts runs its compilers and simulations at a lower
    // priority, so they fill the idle time instead of slowing the other files down.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    // Every file gets its own TMPDIR, removed when it ends: nothing a test or its children put in
    // os.tmpdir() outlives the run.
    setupFiles: ['test/setup/tmpdir.ts'],
  },
});
