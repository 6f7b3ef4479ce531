/**
 * The command line as users meet it (issue 16): strict flags everywhere (an unknown flag or a
 * missing value exits 2 naming it), `--version`, the autoscaler printing its dashboard URL and
 * keeping its key out of the working tree, `init`'s dependency spec, and terminal-friendly logs.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultDataDir } from '../src/autoscaler/data-dir.js';
import { parseFlags, UsageError } from '../src/common/args.js';
import { createLogger } from '../src/common/log.js';
import { prettyLine } from '../src/common/log-pretty.js';
import { defaultNodeworkerSpec } from '../src/init/scaffold.js';
import { RetriesExhaustedError, Serverless } from '../src/client/index.js';
import { createServer } from 'node:net';

const REPO = resolve(__dirname, '..');
const CLI = join(REPO, 'dist', 'cli.js');
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'cli-test-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** Run a compiled entry point to its end (these all fail fast, before doing any work). */
function run(file: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [file, ...args], { cwd: tmp, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('parseFlags', () => {
  const types = { port: 'string', json: 'boolean' } as const;

  it('returns declared flags and positionals', () => {
    expect(parseFlags(['--port', '8', '--json', 'a'], types, { positionals: true })).toEqual({ port: '8', json: true, _: ['a'] });
    expect(parseFlags(['--port=0'], types)).toEqual({ port: '0', _: [] });
  });

  it('names an unknown flag, with the nearest known one', () => {
    expect(() => parseFlags(['--prot', '18084'], types)).toThrow(new UsageError('unknown option --prot (did you mean --port?)'));
    expect(() => parseFlags(['--zzzzzz'], types)).toThrow(new UsageError('unknown option --zzzzzz'));
  });

  it('names a flag missing its value, a value given to a switch, and a stray argument', () => {
    expect(() => parseFlags(['--port'], types)).toThrow(new UsageError('--port needs a value'));
    expect(() => parseFlags(['--port', '-1'], types)).toThrow(/--port needs a value \(for a value starting with "-", write --port=VALUE\)/);
    expect(() => parseFlags(['--prot', '1', '--json=x', 'stray'], types)).toThrow(
      new UsageError('unknown option --prot (did you mean --port?); --json takes no value; unexpected argument "stray"'),
    );
    expect(() => parseFlags(['--json=yes'], types)).toThrow(new UsageError('--json takes no value'));
    expect(() => parseFlags(['8080'], types)).toThrow(new UsageError('unexpected argument "8080"'));
  });
});

describe('every command refuses what it does not know', () => {
  const commands: Array<[string, string[], string]> = [
    ['worker', ['--handlr', 'openai'], '--handlr'],
    ['model-sim', ['--flavr', 'tgi'], '--flavr'],
    ['benchmark', ['--handler', 'openai', '--run', '3'], '--run'],
    ['autoscaler', ['--config', 'x.yaml', '--prot', '18084'], '--prot'],
    ['init', ['dir', '--frce'], '--frce'],
    ['demo', ['--bogus'], '--bogus'],
    ['vast-emulator', ['--market', 'x.yaml', '--prot', '1'], '--prot'],
  ];
  for (const [command, args, flag] of commands) {
    it(`nodeworker ${command} ${args.join(' ')}: exit 2 naming ${flag}`, () => {
      const r = run(CLI, [command, ...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`unknown option ${flag}`);
    });
  }

  it('the scripts and benchmarks too', () => {
    for (const [file, flag] of [
      ['build/scripts/load.js', '--wroker'],
      ['build/scripts/replay.js', '--trce'],
      ['build/benchmarks/run.js', '--quik'],
      ['build/benchmarks/soak.js', '--minuts'],
      ['dist/autoscaler/dashboard/demo.js', '--wrkers'],
    ] as const) {
      const r = run(join(REPO, file), [flag, '1']);
      expect(r.code, `${file}: ${r.stderr}`).toBe(2);
      expect(r.stderr, file).toContain(`unknown option ${flag}`);
    }
  }, 120_000); // CLI processes: a hang guard, not a speed bound (30 s ran out on a busy machine)

  it('nodeworker --version prints the package version; no command is a usage error', () => {
    const v = run(CLI, ['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toBe(VERSION);
    expect(run(CLI, []).code).toBe(2);
  });

  it('benchmark --model-url that is not an http(s) URL exits 2 naming the flag', () => {
    const r = run(CLI, ['benchmark', '--handler', 'openai', '--model-url', 'localhost:8000']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--model-url must be an http\(s\) URL.*"localhost:8000"/);
  });

  it('a TypeScript handler file is refused with the hint to compile it first', () => {
    const file = join(tmp, 'worker.ts');
    writeFileSync(file, 'export default {};\n');
    const r = run(CLI, ['benchmark', '--handler', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is TypeScript: compile it first/);
  });
});

describe('nodeworker autoscaler', () => {
  it('keeps its keys in the user state dir by default and prints the dashboard URL', async () => {
    const home = join(tmp, 'home');
    const cwd = join(tmp, 'work');
    mkdirSync(cwd, { recursive: true });
    const config = join(cwd, 'autoscaler.json');
    writeFileSync(config, JSON.stringify({ endpoints: [{ name: 'e' }], provider: { kind: 'simulated' } }));
    const env = { ...process.env, HOME: home, XDG_STATE_HOME: '', AUTOSCALER_ADMIN_KEY: '', AUTOSCALER_DATA_DIR: '', LOG_LEVEL: 'warn' };
    const child = spawn(process.execPath, [CLI, 'autoscaler', '--config', config, '--port', '0'], { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    try {
      await new Promise<void>((done, fail) => {
        const t = setInterval(() => {
          if (/dashboard: http:\/\/127\.0\.0\.1:\d+\/dashboard/.test(err)) done(clearInterval(t));
        }, 50);
        child.once('exit', (code) => fail(new Error(`autoscaler exited ${code}: ${err}`)));
      });
      const dataDir = join(home, '.local', 'state', 'nodeworker', 'autoscaler');
      expect(err).toContain(`admin key: in ${join(dataDir, 'admin_key')}`);
      expect(readFileSync(join(dataDir, 'engine_key.pem'), 'utf8')).toContain('PRIVATE KEY');
      expect(spawnSync('ls', ['-A', cwd], { encoding: 'utf8' }).stdout.trim()).toBe('autoscaler.json');
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r(null)));
    }
  }, 120_000); // CLI processes: a hang guard, not a speed bound (30 s ran out on a busy machine)

  it('the default data dir follows XDG_STATE_HOME, else ~/.local/state', () => {
    expect(defaultDataDir({ XDG_STATE_HOME: '/s' }, '/h')).toBe('/s/nodeworker/autoscaler');
    expect(defaultDataDir({}, '/h')).toBe('/h/.local/state/nodeworker/autoscaler');
    expect(defaultDataDir({ XDG_STATE_HOME: 'relative' }, '/h')).toBe('/h/.local/state/nodeworker/autoscaler');
  });
});

describe('init dependency spec', () => {
  it('is ^version from an installed copy and file: from a checkout', () => {
    const installed = join(tmp, 'npx-cache', 'node_modules', 'nodeworker');
    mkdirSync(installed, { recursive: true });
    writeFileSync(join(installed, 'package.json'), JSON.stringify({ name: 'nodeworker', version: '3.1.4' }));
    expect(defaultNodeworkerSpec(installed)).toBe('^3.1.4');
    expect(defaultNodeworkerSpec(`${REPO}/`)).toBe(`file:${REPO}`);
  });

  it('is what the installed copy came from: a tarball by its absolute path, a git url, a registry version', () => {
    const project = join(tmp, 'from-tarball');
    const installed = join(project, 'node_modules', 'nodeworker');
    mkdirSync(installed, { recursive: true });
    writeFileSync(join(installed, 'package.json'), JSON.stringify({ name: 'nodeworker', version: '0.1.0' }));
    const lock = (resolved: string) =>
      writeFileSync(
        join(project, 'node_modules', '.package-lock.json'),
        JSON.stringify({ packages: { 'node_modules/nodeworker': { version: '0.1.0', resolved } } }),
      );
    // `^0.1.0` would be E404 with no registry holding nodeworker: the scaffold must name the tarball.
    writeFileSync(join(project, 'nodeworker-0.1.0.tgz'), 'not really a tarball');
    lock('file:nodeworker-0.1.0.tgz');
    expect(defaultNodeworkerSpec(installed)).toBe(`file:${join(project, 'nodeworker-0.1.0.tgz')}`);
    // The tarball moved away since: the installed package directory still holds the same files.
    lock('file:../gone/nodeworker-0.1.0.tgz');
    expect(defaultNodeworkerSpec(installed)).toBe(`file:${installed}`);
    lock('git+ssh://git@example.invalid/you/nodeworker.git#0123abc');
    expect(defaultNodeworkerSpec(installed)).toBe('git+ssh://git@example.invalid/you/nodeworker.git#0123abc');
    lock('https://registry.npmjs.org/nodeworker/-/nodeworker-0.1.0.tgz');
    expect(defaultNodeworkerSpec(installed)).toBe('^0.1.0');
    // No lockfile: the project's package.json spec.
    rmSync(join(project, 'node_modules', '.package-lock.json'));
    writeFileSync(join(project, 'package.json'), JSON.stringify({ dependencies: { nodeworker: 'file:nodeworker-0.1.0.tgz' } }));
    expect(defaultNodeworkerSpec(installed)).toBe(`file:${join(project, 'nodeworker-0.1.0.tgz')}`);
  });
});

describe('logs', () => {
  it('a JSON line becomes one readable line: time, level, name, message, fields', () => {
    const line = JSON.stringify({
      level: 'warn',
      time: '2026-12-04T12:00:01.234Z',
      pid: 7,
      name: 'worker',
      msg: 'slow model',
      ms: 812.5,
      url: 'http://m',
      note: 'two words',
    });
    expect(prettyLine(line)).toBe('12:00:01.234 WARN  worker: slow model ms=812.5 url=http://m note="two words"');
    expect(prettyLine('not json')).toBe('not json');
  });

  it('pretty lines keep secrets redacted', async () => {
    const file = join(tmp, 'pretty.log');
    const log = createLogger('t', { destination: file, format: 'pretty' });
    log.info({ token: 'sekrit-token', request: { signature: 'sig-value' } }, 'hello');
    await new Promise<void>((r) => log.flush(() => r()));
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/INFO {2}t: hello token=\[redacted\]/);
    expect(text).not.toMatch(/sekrit|sig-value/);
  });
});

describe('the client', () => {
  it('says the autoscaler itself cannot be reached, not that the workers may be overloaded', async () => {
    // A port that was just free: nothing listens there.
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    await new Promise((r) => server.close(r));
    const client = new Serverless({ autoscalerUrl: `http://127.0.0.1:${port}`, apiKey: 'k', retry: { maxAttempts: 2, baseDelayMs: 10 } });
    const err = await client
      .endpoint('e')
      .request('/v1/completions', { prompt: 'x' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetriesExhaustedError);
    expect((err as Error).message).toMatch(/autoscaler: connection refused.*The autoscaler itself could not be reached/);
    expect((err as Error).message).not.toMatch(/overloaded/);
  });
});
