import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run the TypeScript sources: the package's own name (used by the handlers) resolves to
    // src/ and handlers/ here, as it resolves to dist/ at run time.
    alias: [
      { find: /^nodeworker$/, replacement: here('./src/index.ts') },
      { find: /^nodeworker\/client$/, replacement: here('./src/client/index.ts') },
      { find: /^nodeworker\/handlers\/([a-z-]+)$/, replacement: here('./handlers/$1.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    // A command that falls back to the user's state dir (the autoscaler's data dir) never touches the real one.
    env: { XDG_STATE_HOME: join(tmpdir(), `nodeworker-test-state-${process.pid}`) },
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: run test files two at a time so timing-sensitive servers are not starved.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
