#!/usr/bin/env node
// `npm test`: build, then every check, each one run even when an earlier one failed (a chain of
// `&&` silently skipped the fresh-clone test after any failure). Exits 1 if any step failed,
// naming each; a failed build stops at once, since every later step would test a stale dist/.
import { spawnSync } from 'node:child_process';

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx';
const steps = [
  ['build', npm, ['run', 'build']],
  ['typecheck', npm, ['run', 'typecheck']],
  ['lint', npm, ['run', 'lint']],
  ['vitest', npx, ['vitest', 'run', '--exclude', 'test/fresh-clone.test.ts']],
  ['fresh-clone', npm, ['run', 'test:clone']],
];

const failed = [];
for (const [name, cmd, args] of steps) {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  const ok = r.status === 0;
  if (!ok) failed.push(`${name} (${r.error ? r.error.message : r.signal ? `signal ${r.signal}` : `exit ${r.status}`})`);
  if (!ok && name === 'build') break;
}
if (failed.length > 0) {
  process.stderr.write(`\nnpm test: FAILED: ${failed.join(', ')}\n`);
  process.exit(1);
}
process.stdout.write(`\nnpm test: every step passed (${steps.map(([n]) => n).join(', ')})\n`);
