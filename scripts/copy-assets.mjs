#!/usr/bin/env node
// Build step after tsc: the package's non-TypeScript files (YAML configs) go beside their compiled
// modules, so dist/ mirrors src/ and code finds them at the same relative place in both.
import { cpSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const dist = join(root, 'dist');
const ASSET = /\.(ya?ml)$/;

let copied = 0;
for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || !ASSET.test(entry.name)) continue;
  const from = join(entry.parentPath ?? entry.path, entry.name); // parentPath: Node >= 20.12
  cpSync(from, join(dist, relative(src, from)));
  copied++;
}
if (copied === 0) throw new Error('copy-assets: no asset found under src/');
