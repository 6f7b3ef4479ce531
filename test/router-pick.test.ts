import { describe, expect, it } from 'vitest';
import { AVOID_HARD_MS, AVOID_MS, EndpointRouter, type RequestEntry, type RoutableWorker } from '../src/autoscaler/router.js';
import { seededRandom } from '../src/common/random.js';

/**
 * The router's pick is indexed (per-perf groups ordered by load). This checks it against the
 * linear scan it replaced, kept here as the reference: on random fleets, loads, reports, failures,
 * suspects, avoid lists, limits and budgets, the indexed choice must be the scan's choice exactly,
 * tie turns included.
 */

const TIE_TOLERANCE = 1e-6;
const MIN_ROUTE_QUEUE_S = 2;

interface World {
  now: number;
  list: RoutableWorker[];
  maxQueue: number;
  budget: number;
  failedIds: Set<number>;
  /** Requests routed to each worker and not yet completed. */
  routed: Map<number, number[]>;
}

/** The linear scan the router used before its index (a copy of its semantics, on public accessors). */
function referencePick(
  router: EndpointRouter,
  w: World,
  entry: RequestEntry | undefined,
  avoidMs: number,
  healthyOnly: boolean,
  turn: number,
): { id: number; wait: number; ties: number } | null {
  const now = w.now;
  let limit = w.maxQueue;
  if (w.budget > 0 && entry) limit = Math.min(limit, Math.max(MIN_ROUTE_QUEUE_S, w.budget - (now - entry.createdAt) / 1000));
  const cost = entry?.cost ?? 100;
  const avoid = entry && entry.avoid.size > 0 ? entry.avoid : null;
  const anyFailures = [...w.failedIds].some((id) => router.failureScore(id, now) > 0);
  let bestRank = Number.POSITIVE_INFINITY;
  let bestFinish = Number.POSITIVE_INFINITY;
  let tied: Array<{ id: number; wait: number }> = [];
  for (const x of w.list) {
    if (!(x.perf > 0) || !x.url) continue;
    if (avoid) {
      const at = avoid.get(x.id);
      if (at !== undefined && now - at < avoidMs) continue;
    }
    if (router.suspect(x, now)) continue;
    const load = router.expectedLoad(x);
    const wait = load / x.perf;
    if (wait > limit) continue;
    const rank = anyFailures && (router.unproven(x.id) || router.failing(x.id, now)) ? 1 : 0;
    if (healthyOnly && rank > 0) continue;
    const finish = (load + cost) / x.perf;
    if (rank < bestRank || (rank === bestRank && finish < bestFinish * (1 - TIE_TOLERANCE))) {
      bestRank = rank;
      bestFinish = finish;
      tied = [{ id: x.id, wait }];
    } else if (rank === bestRank && finish <= bestFinish * (1 + TIE_TOLERANCE)) {
      tied.push({ id: x.id, wait });
    }
  }
  if (tied.length === 0) return null;
  tied.sort((a, b) => a.id - b.id);
  const k = tied.length === 1 ? 0 : turn % tied.length;
  return { ...tied[k]!, ties: tied.length };
}

/** choose() as the router does it, on the reference pick: the turn advances only on a tie. */
function referenceChoose(router: EndpointRouter, w: World, entry: RequestEntry | undefined, standby: boolean, turn: number) {
  const first = referencePick(router, w, entry, AVOID_MS, standby, turn);
  if (!entry || entry.avoid.size === 0 || first || standby) return first;
  return referencePick(router, w, entry, AVOID_HARD_MS, false, turn);
}

/** The index's own invariant: each perf group in (load, id) order, each slot's load the worker's expected load. */
function checkIndex(router: EndpointRouter, w: World, where: string): void {
  const groups = (router as unknown as { groups: Array<{ perf: number; slots: Array<{ load: number; w: RoutableWorker }> }> }).groups;
  const inList = new Set(w.list);
  for (const g of groups) {
    for (let i = 0; i < g.slots.length; i++) {
      const s = g.slots[i]!;
      if (!inList.has(s.w)) continue; // a stale index (the list changed): rebuilt at the next pick
      if (s.load !== router.expectedLoad(s.w)) throw new Error(`${where}: worker ${s.w.id} indexed at ${s.load}, its load is ${router.expectedLoad(s.w)}`);
      const prev = g.slots[i - 1];
      if (prev && (prev.load > s.load || (prev.load === s.load && prev.w.id > s.w.id))) throw new Error(`${where}: group ${g.perf} out of order at ${i}`);
    }
  }
}

function turnOf(router: EndpointRouter): number {
  return (router as unknown as { turn: number }).turn;
}

function runCase(seed: number, steps: number, calm = false, fleet = 60): { compared: number; ties: number; nulls: number } {
  const r = seededRandom(seed);
  const int = (n: number) => Math.floor(r() * n);
  // Big fleets: few perfs and few load levels, so many workers share a load (as at steady state)
  // and one request moves a worker past dozens of equal ones.
  const big = fleet > 100;
  const perfs = big ? [100, 100, 100, 200] : [50, 100, 100, 200];
  const someLoad = () => (big ? 100 * int(3) : r() < 0.3 ? 0 : 50 * int(30));
  const w: World = { now: 1_000_000, list: [], maxQueue: 30, budget: 0, failedIds: new Set(), routed: new Map() };
  const fleetSize = 1 + int(fleet);
  let nextId = 1;
  const makeWorker = (): RoutableWorker => {
    const id = nextId++;
    return { id, url: `http://w${id}.invalid`, perf: perfs[int(perfs.length)]!, reportedLoad: someLoad(), lastReportAt: w.now };
  };
  for (let i = 0; i < fleetSize; i++) w.list.push(makeWorker());
  let standby = false;
  const router = new EndpointRouter({
    endpoint: 'e',
    now: () => w.now,
    sign: (url) => `sig:${url}`,
    readyWorkers: () => w.list,
    maxQueueTime: () => w.maxQueue,
    queueBudget: () => w.budget,
    standbyComing: () => standby,
    unreportedTtlMs: 20_000,
    requestTtlMs: 600_000,
  });
  let idx = 1;
  let compared = 0;
  let ties = 0;
  let nulls = 0;
  for (let step = 0; step < steps; step++) {
    const op = int(100);
    if (op < 30) {
      const e = router.submit(idx++, [10, 50, 100, 256][int(4)]!, 600);
      if (e.state === 'routed' && e.workerId !== null) w.routed.set(e.workerId, [...(w.routed.get(e.workerId) ?? []), e.idx]);
    } else if (op < 45 && w.list.length > 0) {
      // A report: a new load (told to the router) and, sometimes, its requests seen as working.
      const x = w.list[int(w.list.length)]!;
      x.reportedLoad = someLoad();
      x.lastReportAt = w.now;
      router.workerChanged(x.id);
      if (r() < 0.7) router.markReported(x.id, w.routed.get(x.id) ?? []);
    } else if (calm && op < 64) {
      // Calm: reports keep up, nothing fails, time moves in small steps (the router's quick tie path).
      const x = w.list[int(w.list.length)];
      if (x) router.markReported(x.id, w.routed.get(x.id) ?? []);
      w.now += int(300);
    } else if (op < 52 && w.list.length > 0) {
      const x = w.list[int(w.list.length)]!;
      const open = w.routed.get(x.id) ?? [];
      const done = open.splice(0, 1 + int(3));
      const ok = calm || r() < 0.85;
      router.complete(x.id, done, ok);
      if (!ok) w.failedIds.add(x.id);
    } else if (op < 56 && w.list.length > 0) {
      const x = w.list[int(w.list.length)]!;
      router.noteFailure(x.id);
      w.failedIds.add(x.id);
    } else if (op < 59 && w.list.length > 0) {
      router.noteSuccess(w.list[int(w.list.length)]!.id);
    } else if (op < 64) {
      w.now += int(8_000); // reports age: some workers turn suspect; failures fade
    } else if (op < 66) {
      router.expire();
    } else if (op < 68) {
      // The ready set changes: a new array (a worker leaves, one joins).
      const next = w.list.filter(() => r() > 0.1);
      for (const x of w.list) if (!next.includes(x) && r() < 0.5) router.dropWorker(x.id);
      if (r() < 0.7) next.push(makeWorker());
      w.list = next;
    } else if (op < 70) {
      w.maxQueue = [0.5, 2, 10, 30, Number.POSITIVE_INFINITY][int(5)]!;
      w.budget = [0, 0, 3, 10][int(4)]!;
    } else if (op < 72) {
      standby = !standby;
    } else {
      // Compare: a request of some cost, age and avoid list; or no request at all.
      let entry: RequestEntry | undefined;
      if (r() < 0.9) {
        const avoid = new Map<number, number>();
        const nAvoid = r() < 0.5 ? 0 : 1 + int(4);
        for (let i = 0; i < nAvoid && w.list.length > 0; i++) avoid.set(w.list[int(w.list.length)]!.id, w.now - int(12_000));
        entry = {
          idx: 0,
          endpoint: 'e',
          cost: [1, 10, 100, 256, 1000][int(5)]!,
          createdAt: w.now - int(20_000),
          replayTimeoutMs: 60_000,
          state: 'queued',
          workerId: null,
          routedAt: null,
          answer: null,
          reported: false,
          expectedQueueTime: null,
          lastSeenAt: w.now,
          avoid,
          attempts: 0,
          delivered: false,
        };
      }
      checkIndex(router, w, `seed ${seed} step ${step}`);
      const turn = turnOf(router);
      const want = referenceChoose(router, w, entry, standby, turn);
      const got = router.choose(entry);
      if (process.env.PICK_DEBUG && (got?.worker.id ?? null) !== (want?.id ?? null)) {
        const groups = (router as unknown as { groups: Array<{ perf: number; slots: Array<{ load: number; w: RoutableWorker }> }> }).groups;
        console.log(
          JSON.stringify({
            seed,
            step,
            limit: w.maxQueue,
            budget: w.budget,
            standby,
            entry: entry && { cost: entry.cost, age: w.now - entry.createdAt, avoid: [...entry.avoid].map(([k, v]) => [k, w.now - v]) },
          }),
        );
        for (const g of groups)
          console.log(
            g.perf,
            g.slots
              .map(
                (s) =>
                  `${s.w.id}:${s.load}/${router.expectedLoad(s.w)}${router.suspect(s.w, w.now) ? 'S' : ''}${router.unproven(s.w.id) || router.failing(s.w.id, w.now) ? 'F' : ''}`,
              )
              .join(' '),
          );
      }
      expect(got && { id: got.worker.id, wait: got.wait }, `seed ${seed} step ${step}`).toEqual(want && { id: want.id, wait: want.wait });
      compared++;
      if (!want) nulls++;
      else if (want.ties > 1) ties++;
    }
  }
  return { compared, ties, nulls };
}

describe('indexed pick', () => {
  it('chooses exactly what the linear scan chooses, on random fleets and histories', () => {
    let compared = 0;
    let ties = 0;
    let nulls = 0;
    for (let seed = 1; seed <= 60; seed++) {
      const c = runCase(seed, 600);
      compared += c.compared;
      ties += c.ties;
      nulls += c.nulls;
    }
    if (process.env.PICK_DEBUG) console.log({ compared, ties, nulls });
    // The cases reach what matters: many comparisons, with ties taking turns and with nobody eligible.
    expect(compared).toBeGreaterThan(5_000);
    expect(ties).toBeGreaterThan(200);
    expect(nulls).toBeGreaterThan(50);
  });

  it('chooses what the linear scan chooses when nothing fails and reports keep up (large ties)', () => {
    let ties = 0;
    for (let seed = 101; seed <= 140; seed++) ties += runCase(seed, 600, true).ties;
    expect(ties).toBeGreaterThan(500);
  });

  it('chooses what the linear scan chooses in fleets of hundreds (loads step past many equal workers)', () => {
    let ties = 0;
    for (let seed = 201; seed <= 206; seed++) ties += runCase(seed, 3000, seed % 2 === 0, 500).ties;
    expect(ties).toBeGreaterThan(100);
  });

  it('after a restart (requests taken back, routed long ago and never reported) suspects are found as the scan finds them', () => {
    for (let seed = 301; seed <= 320; seed++) {
      const r = seededRandom(seed);
      const w: World = { now: 1_000_000, list: [], maxQueue: 30, budget: 0, failedIds: new Set(), routed: new Map() };
      for (let id = 1; id <= 40; id++) w.list.push({ id, url: `http://w${id}.invalid`, perf: 100, reportedLoad: 0, lastReportAt: w.now });
      const opts = {
        endpoint: 'e',
        now: () => w.now,
        sign: (url: string) => `sig:${url}`,
        readyWorkers: () => w.list,
        maxQueueTime: () => w.maxQueue,
        unreportedTtlMs: 600_000,
        requestTtlMs: 6_000_000,
      };
      const before = new EndpointRouter(opts);
      // Routed over a minute; taken back newest first (the worst order for a list kept oldest first).
      for (let i = 1; i <= 60; i++) {
        for (const x of w.list) x.lastReportAt = w.now; // reporting then: nobody suspect before the restart
        before.submit(i, 10, 600);
        w.now += Math.floor(r() * 2_000);
      }
      const pending = before.exportPending().sort((a, b) => (b.routedAt ?? 0) - (a.routedAt ?? 0));
      const after = new EndpointRouter(opts);
      after.importPending(pending, before.lastReqnum());
      w.now += 500 + Math.floor(r() * 2_000);
      // Half the workers have reported since; the others' last report is from before their requests.
      for (const x of w.list) x.lastReportAt = r() < 0.5 ? w.now : 1_000_000;
      for (let i = 0; i < 30; i++) {
        const want = referenceChoose(after, w, undefined, false, turnOf(after));
        const got = after.choose();
        expect(got?.worker.id ?? null, `seed ${seed} #${i}`).toBe(want?.id ?? null);
        after.submit(1000 + i, 10, 600);
        w.now += 200;
      }
    }
  });

  it('keeps its routing list as short as the unreported requests, on the slow path too (a failing worker)', () => {
    let now = 0;
    const list: RoutableWorker[] = [1, 2, 3].map((id) => ({ id, url: `http://w${id}.invalid`, perf: 100, reportedLoad: 0, lastReportAt: 0 }));
    const router = new EndpointRouter({
      endpoint: 'e',
      now: () => now,
      sign: () => 's',
      readyWorkers: () => list,
      maxQueueTime: () => 30,
      unreportedTtlMs: 60_000,
      requestTtlMs: 600_000,
    });
    router.noteFailure(3); // failures present all along: picks never take the quick path
    const fifo = router as unknown as { fifoEntries: { length: number; buf: unknown[] } };
    for (let i = 1; i <= 50_000; i++) {
      const e = router.submit(i, 1, 60);
      now += 1;
      // Each request is reported and ended at once, as a live worker does within a second.
      router.markReported(e.workerId!, [i]);
      router.complete(e.workerId!, [i], true);
    }
    expect(router.stats.routed).toBe(50_000);
    expect(fifo.fifoEntries.length).toBeLessThanOrEqual(1);
    // Its ring never grew past what was unreported at once.
    expect(fifo.fifoEntries.buf.length).toBeLessThan(5_000);
    // So do the workers' own lists of unreported requests, and they keep no ended request alive
    // (an array cut down every 1,024 drops held each worker's last thousand routings).
    const books = (router as unknown as { books: Map<number, { unreported: { length: number; buf: unknown[] } }> }).books;
    for (const id of [1, 2, 3]) {
      const ring = books.get(id)!.unreported;
      expect(ring.length, `worker ${id}`).toBeLessThanOrEqual(1);
      expect(ring.buf.filter((e) => e !== undefined).length, `worker ${id}`).toBeLessThanOrEqual(1);
    }
  });

  it('follows a report told with workerChanged: the lighter worker wins', () => {
    const list: RoutableWorker[] = [
      { id: 1, url: 'http://a.invalid', perf: 100, reportedLoad: 0, lastReportAt: 0 },
      { id: 2, url: 'http://b.invalid', perf: 100, reportedLoad: 500, lastReportAt: 0 },
    ];
    const router = new EndpointRouter({
      endpoint: 'e',
      now: () => 0,
      sign: () => 's',
      readyWorkers: () => list,
      maxQueueTime: () => 30,
      unreportedTtlMs: 20_000,
      requestTtlMs: 600_000,
    });
    expect(router.choose()?.worker.id).toBe(1);
    list[0]!.reportedLoad = 950;
    router.workerChanged(1);
    expect(router.choose()?.worker.id).toBe(2);
    // Routing moves a worker down its group too: five requests of 100 to 2 (500 → 1000) make 1 (950) the lighter again.
    for (let i = 1; i <= 5; i++) expect(router.submit(i, 100, 60).workerId).toBe(2);
    expect(router.submit(6, 100, 60).workerId).toBe(1);
  });
});

describe('plain copies of requests (journal records)', () => {
  /** The copy the router made before its literal one: every field but avoid/endpoint, answer unsigned. */
  function oldPlain(e: RequestEntry) {
    const { avoid, endpoint: _e, answer, ...rest } = e;
    return { ...rest, answer: answer && { ...answer, signature: '' }, avoid: [...avoid] };
  }

  for (const strict of [false, true]) {
    it(`hold exactly the fields the old copy held (${strict ? 'strict' : 'plain'} signing)`, () => {
      let now = 1_000;
      const list: RoutableWorker[] = [1, 2, 3].map((id) => ({ id, url: `http://w${id}.invalid`, perf: 100, reportedLoad: 0, lastReportAt: 0 }));
      const router = new EndpointRouter({
        endpoint: 'e',
        now: () => now,
        sign: (url) => `sig:${url}`,
        strictAuth: strict ? { sign: () => 'strict-sig', ttlSeconds: 60, wallClock: () => 1_700_000_000_000 } : undefined,
        readyWorkers: () => list,
        maxQueueTime: () => 0.5,
        unreportedTtlMs: 20_000,
        requestTtlMs: 600_000,
      });
      const entries: RequestEntry[] = [];
      for (let i = 1; i <= 12; i++) entries.push(router.submit(i, 20, 60)); // some queue: 0.5 s of 100/s is 50
      now += 5_000;
      entries[0]!.delivered = true; // the client was given its url (the protocol marks this)
      router.reroute(1, 20, 30); // a failover: an avoid list, attempts 2
      now += 1_000;
      router.touch(entries[5]!, 90);
      const plain = router.exportPending();
      expect(plain.length).toBe(12);
      expect(plain.some((p) => p.state === 'queued') && plain.some((p) => p.state === 'routed')).toBe(true);
      expect(plain.some((p) => p.avoid.length > 0)).toBe(true);
      for (const p of plain) expect(JSON.parse(JSON.stringify(p))).toEqual(JSON.parse(JSON.stringify(oldPlain(router.get(p.idx)!))));
      if (strict) expect(plain.find((p) => p.answer)!.answer!.expires_at).toBeGreaterThan(0);
    });
  }
});
