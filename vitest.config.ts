import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    // Suites share one local stack (one database): run files one after another.
    fileParallelism: false,
    testTimeout: 20000,
  },
});
