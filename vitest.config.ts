import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Model-level tests run real forward passes on a 2-core CI machine.
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
