/**
 * The files `nodeworker init` writes. Kept as code so they ship inside dist with nothing to copy.
 * Every template is a function of the few values that differ between projects.
 */

export interface TemplateValues {
  /** npm package name of the new project. */
  name: string;
  /** The dependency spec of nodeworker: `file:/path/to/checkout`, a git url, or a version range. */
  nodeworkerSpec: string;
  /** Version ranges of the tools, taken from nodeworker's own package.json. */
  versions: { zod: string; typescript: string; vitest: string; typesNode: string };
}

export function packageJson(v: TemplateValues): string {
  const pkg = {
    name: v.name,
    version: '0.1.0',
    private: true,
    type: 'module',
    description: 'A custom nodeworker worker',
    scripts: {
      build: 'tsc -p tsconfig.json',
      test: 'vitest run',
      // exec: the worker replaces npm's shell, so npm's SIGTERM reaches it (no orphan).
      start: 'exec nodeworker worker --handler dist/worker.js',
    },
    dependencies: { nodeworker: v.nodeworkerSpec, zod: v.versions.zod },
    devDependencies: { '@types/node': v.versions.typesNode, typescript: v.versions.typescript, vitest: v.versions.vitest },
    engines: { node: '>=20.11' },
  };
  return JSON.stringify(pkg, null, 2) + '\n';
}

export function tsconfigJson(): string {
  const cfg = {
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib: ['ES2023'],
      types: ['node'],
      strict: true,
      outDir: 'dist',
      rootDir: '.',
      declaration: false,
      sourceMap: true,
      skipLibCheck: true,
      esModuleInterop: true,
    },
    include: ['worker.ts'],
  };
  return JSON.stringify(cfg, null, 2) + '\n';
}

export function gitignore(): string {
  return 'node_modules/\ndist/\n.has_benchmark\n';
}

export function workerTs(): string {
  return `/**
 * A custom worker: it sits beside an OpenAI-compatible model server (vLLM), offers POST /generate
 * to clients, and tells the serverless engine what each request costs.
 *
 * Build it with \`npm run build\`; run it with
 *   MODEL_LOG=/var/log/model.log CONTAINER_ID=1 UNSECURED=true WORKER_HOST=127.0.0.1 npx nodeworker worker --handler dist/worker.js
 * (UNSECURED skips signature checks: keep such a worker on loopback, as WORKER_HOST does here)
 * (on Vast the template's on-start script sets the environment; see nodeworker's docs/deploy.md).
 */
import { z } from 'zod';
import { defineHandler, defineWorker } from 'nodeworker';

/** What a client sends as \`payload\`. A payload that does not fit gets a 422 naming the field. */
const generatePayload = z.object({
  prompt: z.string({ message: 'prompt must be a string' }).min(1, 'prompt must not be empty'),
  max_tokens: z.number({ message: 'max_tokens must be a number' }).int().min(1).max(4096).default(64),
  temperature: z.number().min(0).max(2).optional(),
  stream: z.boolean().default(false),
});
type GeneratePayload = z.infer<typeof generatePayload>;

/** About four characters a token: the prompt's share of the work. */
const promptTokens = (text: string) => Math.ceil(text.length / 4);

const generate = defineHandler<GeneratePayload>({
  route: '/generate',
  upstreamPath: '/v1/completions',
  // vLLM batches requests: send them all at once.
  allowParallelRequests: true,
  // Above this many seconds of expected queue the worker answers 429 and the client goes elsewhere.
  maxQueueTime: 30,
  payload: generatePayload,
  // The workload is in tokens, the unit the benchmark measures perf in.
  workload: (p) => promptTokens(p.prompt) + p.max_tokens,
  toModelRequest: (p) => ({
    ...(process.env.MODEL_NAME ? { model: process.env.MODEL_NAME } : {}),
    prompt: p.prompt,
    max_tokens: p.max_tokens,
    temperature: p.temperature,
    stream: p.stream,
  }),
  // Non-streamed answers: keep only the text. Streamed ones pass through as server-sent events.
  toClientResponse: (body, status) => {
    if (status !== 200) return body;
    const b = body as { choices?: Array<{ text?: string }>; usage?: unknown };
    return { text: b.choices?.[0]?.text ?? '', usage: b.usage ?? null };
  },
  // How perf is measured once the model is up: 4 rounds of 16 requests at once.
  benchmark: {
    generator: (i) => ({ prompt: \`Benchmark request \${i}: explain what a worker does.\`, max_tokens: 64, stream: false }),
    runs: 4,
    concurrency: 16,
  },
});

export default defineWorker({
  // GET this path on the model server must answer 200 once the model serves.
  healthPath: '/health',
  // Substrings of the model's log lines: loaded, failed, worth echoing.
  logActions: {
    onLoad: ['Application startup complete.'],
    onError: ['Traceback (most recent call last):', 'RuntimeError:', 'CUDA out of memory'],
    onInfo: ['Loading model weights'],
  },
  handlers: [generate],
});
`;
}

export function workerTestTs(): string {
  return `/**
 * Runs the worker for real: nodeworker's model simulator stands in for vLLM (its own process,
 * writing the same log lines), the worker watches that log, benchmarks, and serves requests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { defineWorker, parseWorkerEnv, startWorker, type RunningWorker } from 'nodeworker';
import worker from '../worker.js';

const NODEWORKER_CLI = fileURLToPath(new URL('../node_modules/nodeworker/dist/cli.js', import.meta.url));

let dir: string;
let model: ChildProcess;
let running: RunningWorker;

/** Start \`nodeworker model-sim\` and resolve with its URL once it listens. */
function startModelSim(logFile: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [NODEWORKER_CLI, 'model-sim', '--flavor', 'openai', '--port', '0', '--load-seconds', '0.3', '--token-rate', '2000', '--log-file', logFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /listening on (http:\\/\\/\\S+)/.exec(out);
      if (m) resolve({ child, url: m[1]! });
    });
    child.once('exit', (code) => reject(new Error(\`model-sim exited with code \${code}: \${out}\`)));
  });
}

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(\`timed out waiting for \${what}\`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** POST {auth_data, payload} to the worker. UNSECURED: the signature is not checked. */
async function post(route: string, payload: unknown) {
  const authData = { cost: 10, endpoint: 'test', reqnum: 1, request_idx: 1, signature: '', url: running.url };
  return fetch(running.url + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ auth_data: authData, payload }) });
}

beforeAll(async () => {
  process.env.LOG_LEVEL ??= 'warn';
  dir = mkdtempSync(join(tmpdir(), 'worker-test-'));
  const logFile = join(dir, 'model.log');
  const sim = await startModelSim(logFile);
  model = sim.child;
  const definition = defineWorker({ ...worker.spec, modelServerUrl: sim.url, modelLogFile: logFile });
  const env = parseWorkerEnv({ WORKER_PORT: '0', WORKER_HOST: '127.0.0.1', CONTAINER_ID: '1', UNSECURED: 'true', WORKSPACE_DIR: dir });
  running = await startWorker({ definition, env, timings: { noHealthWaitMs: 0 } });
  await waitUntil('the worker to be ready', () => running.lifecycle.state === 'ready');
}, 30_000);

afterAll(async () => {
  await running?.close();
  model?.kill('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('measured its perf with the benchmark', () => {
  expect(running.ledger.maxPerf).toBeGreaterThan(0);
});

it('answers /generate with the text and counts its workload', async () => {
  const res = await post('/generate', { prompt: 'Say hello', max_tokens: 8 });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { text: string; usage: { completion_tokens: number } };
  expect(body.text.length).toBeGreaterThan(0);
  expect(body.usage.completion_tokens).toBe(8);
});

it('streams when asked', async () => {
  const res = await post('/generate', { prompt: 'Count', max_tokens: 5, stream: true });
  expect(res.headers.get('content-type')).toMatch(/text\\/event-stream/);
  const text = await res.text();
  expect(text.trim().endsWith('data: [DONE]')).toBe(true);
});

it('refuses a bad payload with a 422 naming the field', async () => {
  const res = await post('/generate', { prompt: 42 });
  expect(res.status).toBe(422);
  const body = (await res.json()) as { payload: Record<string, string> };
  expect(Object.keys(body.payload)).toContain('prompt');
});
`;
}

export function readme(v: TemplateValues): string {
  return `# ${v.name}

A custom nodeworker worker: \`worker.ts\` defines one route, \`POST /generate\`,
in front of an OpenAI-compatible model server (vLLM), with its payload schema, its workload (the
cost the serverless engine plans with), how the model's log says "loaded" and how perf is measured.

\`\`\`sh
npm install
npm run build     # compiles worker.ts to dist/worker.js
npm test          # runs the worker against nodeworker's model simulator
\`\`\`

Try it by hand (two terminals):

\`\`\`sh
npx nodeworker model-sim --flavor openai --port 8000 --log-file /tmp/model.log
MODEL_LOG=/tmp/model.log UNSECURED=true WORKER_HOST=127.0.0.1 CONTAINER_ID=1 npx nodeworker worker --handler dist/worker.js
curl -s 127.0.0.1:3000/generate -H 'content-type: application/json' \\
  -d '{"auth_data":{"cost":1,"endpoint":"e","reqnum":1,"request_idx":1,"signature":"","url":""},"payload":{"prompt":"Hi"}}'
\`\`\`

\`UNSECURED=true\` turns signature checks off, so the worker above listens on loopback only
(\`WORKER_HOST=127.0.0.1\`; the default is every interface): never expose such a worker.

Deploy: on the GPU instance, build this project and start the worker with
\`nodeworker worker --handler /path/to/${v.name}/dist/worker.js\` (or \`BACKEND=/path/to/dist/worker.js\`
with nodeworker's on_start.sh). nodeworker's docs (handlers.md, deploy.md, configuration.md) say
what every option and environment variable does.

nodeworker comes from \`${v.nodeworkerSpec}\` (see package.json).
`;
}
