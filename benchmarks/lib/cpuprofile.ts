import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Summaries of V8 `.cpuprofile` files (from `node --cpu-prof`): self time by function and by
 * where the code lives (the worker's own code, node:http, undici, native/GC/idle), as markdown
 * tables for docs/performance.md. The raw profiles stay out of the repository.
 */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One row of a summary: a function (or an area) and the share of busy time it spent itself. */
export interface SelfTimeRow {
  name: string;
  where: string;
  selfMs: number;
  /** Share of the non-idle time, 0..1. */
  share: number;
}

export interface ProfileSummary {
  /** Wall time the profile covers, ms. */
  totalMs: number;
  /** Time not spent idle (everything but `(idle)`), ms. */
  busyMs: number;
  functions: SelfTimeRow[];
  areas: SelfTimeRow[];
}

/** The area a function belongs to, from its script URL. */
export function areaOf(url: string, functionName: string): string {
  if (!url) {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)') return 'native (syscalls, libuv, V8)';
    return 'native (syscalls, libuv, V8)';
  }
  if (url.includes('/node_modules/undici/')) return 'undici';
  if (url.includes('/node_modules/zod/')) return 'zod (payload schema)';
  if (url.includes('/node_modules/pino') || url.includes('/node_modules/sonic-boom')) return 'pino (logs)';
  if (url.includes('/node_modules/')) return 'other packages';
  if (url.startsWith('node:internal/http') || url === 'node:_http_server' || url.startsWith('node:_http')) return 'node:http (server)';
  if (url.startsWith('node:internal/streams') || url.startsWith('node:stream')) return 'node streams';
  if (url.startsWith('node:net') || url.startsWith('node:internal/stream_base') || url.startsWith('node:internal/net')) return 'node:net (sockets)';
  if (url.startsWith('node:')) return 'node (other)';
  if (url.includes('/src/worker/')) return 'worker (src/worker)';
  if (url.includes('/handlers/')) return 'handler';
  return 'other';
}

function shortUrl(url: string): string {
  if (!url) return '';
  const i = url.lastIndexOf('/node_modules/');
  if (i >= 0) return url.slice(i + '/node_modules/'.length);
  const j = url.indexOf('/dist/');
  if (j >= 0) return url.slice(j + '/dist/'.length);
  return url.replace(/^file:\/\//, '');
}

/** Self time per function and per area of one profile, busiest first. */
export function summarizeProfile(profile: CpuProfile, topN = 15): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the time after it to sample i.
    const dt = profile.timeDeltas[i + 1] ?? 0;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  }
  const fn = new Map<string, { name: string; where: string; us: number }>();
  const area = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    const cf = n.callFrame;
    total += us;
    const a = areaOf(cf.url, cf.functionName);
    if (a === 'idle') {
      idle += us;
      continue;
    }
    area.set(a, (area.get(a) ?? 0) + us);
    const name = cf.functionName || '(anonymous)';
    const where = cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : '';
    const key = `${name}\u0000${where}`;
    const row = fn.get(key) ?? { name, where, us: 0 };
    row.us += us;
    fn.set(key, row);
  }
  const busy = total - idle;
  const rows = (entries: Array<{ name: string; where: string; us: number }>) =>
    entries.sort((x, y) => y.us - x.us).map((e) => ({ name: e.name, where: e.where, selfMs: e.us / 1000, share: busy > 0 ? e.us / busy : 0 }));
  return {
    totalMs: total / 1000,
    busyMs: busy / 1000,
    functions: rows([...fn.values()]).slice(0, topN),
    areas: rows([...area.entries()].map(([name, us]) => ({ name, where: '', us }))),
  };
}

/** Read a `.cpuprofile` file and summarize it. */
export function summarizeProfileFile(path: string, topN = 15): ProfileSummary {
  return summarizeProfile(JSON.parse(readFileSync(path, 'utf8')) as CpuProfile, topN);
}

/** The summary as two markdown tables: self time by area, then the top functions. */
export function formatProfileSummary(s: ProfileSummary, perRequestDivisor?: number): string {
  const per = (ms: number) => (perRequestDivisor ? ` | ${((ms * 1000) / perRequestDivisor).toFixed(1)}` : '');
  const head = perRequestDivisor ? ' | µs/request' : '';
  const sep = perRequestDivisor ? ' | ---:' : '';
  const out: string[] = [];
  out.push(`Busy ${s.busyMs.toFixed(0)} ms of ${s.totalMs.toFixed(0)} ms profiled.`, '');
  out.push(`| area | self ms | share${head} |`, `| --- | ---: | ---:${sep} |`);
  for (const a of s.areas) out.push(`| ${a.name} | ${a.selfMs.toFixed(0)} | ${(a.share * 100).toFixed(1)}%${per(a.selfMs)} |`);
  out.push('', `| function | where | self ms | share${head} |`, `| --- | --- | ---: | ---:${sep} |`);
  for (const f of s.functions) out.push(`| \`${f.name}\` | ${f.where} | ${f.selfMs.toFixed(0)} | ${(f.share * 100).toFixed(1)}%${per(f.selfMs)} |`);
  return out.join('\n');
}

// `node build/benchmarks/lib/cpuprofile.js FILE.cpuprofile [topN] [requests]` prints the tables.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, top, requests] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: cpuprofile.js FILE.cpuprofile [topN] [requests]\n');
    process.exit(2);
  }
  process.stdout.write(formatProfileSummary(summarizeProfileFile(file, Number(top ?? 15)), requests ? Number(requests) : undefined) + '\n');
}
