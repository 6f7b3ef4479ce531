#!/usr/bin/env node
import { main } from './src/cli.js';

main(process.argv.slice(2)).then(
  (code) => {
    if (typeof code === 'number') process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`nodeworker: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
