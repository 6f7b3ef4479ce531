/**
 * Time as the engine sees it. The live server runs on `realClock`; tests and the trace
 * simulation run the same engine on a `FakeClock`, a discrete-event scheduler that jumps
 * from one timer to the next, so an hour of traffic takes seconds of CPU.
 */

/** An opaque timer handle. */
export type TimerId = number;

/** The clock abstraction shared by the engine, the router and the simulated provider. */
export interface Clock {
  /** Milliseconds (epoch for the real clock, any origin for a fake one). */
  now(): number;
  /** Run `fn` once after `ms`. */
  setTimeout(fn: () => void, ms: number): TimerId;
  /** Run `fn` every `ms` (ms > 0). */
  setInterval(fn: () => void, ms: number): TimerId;
  /** Cancel a timer from either call; unknown ids are ignored. */
  clearTimer(id: TimerId): void;
}

/** Wall-clock time; timers are unref'd so a forgotten one never holds the process open. */
export function createRealClock(): Clock {
  const timers = new Map<TimerId, NodeJS.Timeout>();
  let next = 1;
  return {
    now: () => Date.now(),
    setTimeout(fn, ms) {
      const id = next++;
      const t = setTimeout(
        () => {
          timers.delete(id);
          fn();
        },
        Math.max(0, ms),
      );
      t.unref();
      timers.set(id, t);
      return id;
    },
    setInterval(fn, ms) {
      const id = next++;
      const t = setInterval(fn, Math.max(1, ms));
      t.unref();
      timers.set(id, t);
      return id;
    },
    clearTimer(id) {
      const t = timers.get(id);
      if (t) {
        clearTimeout(t);
        timers.delete(id);
      }
    },
  };
}

interface FakeTimer {
  id: TimerId;
  at: number;
  seq: number;
  every: number; // 0 for a one-shot timer
  fn: () => void;
}

/**
 * A discrete-event clock: time only moves when `advanceTo`/`advanceBy`/`runNext` is called,
 * and timers fire in (time, creation order) order. Timers set from inside a timer fire in
 * the same advance when they are due. Guarantees: `now()` never goes backwards, and a timer
 * never fires before its due time.
 */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private nextId = 1;
  private heap: FakeTimer[] = [];
  private live = new Map<TimerId, FakeTimer>();

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    return this.add(fn, Math.max(0, ms), 0);
  }

  setInterval(fn: () => void, ms: number): TimerId {
    if (!(ms > 0)) throw new Error('FakeClock.setInterval needs ms > 0');
    return this.add(fn, ms, ms);
  }

  clearTimer(id: TimerId): void {
    // Lazy deletion: the heap entry is skipped when it surfaces.
    this.live.delete(id);
  }

  /** Timers still scheduled. */
  pending(): number {
    return this.live.size;
  }

  /** Due time of the next live timer, or null. */
  nextAt(): number | null {
    this.dropDead();
    return this.heap[0]?.at ?? null;
  }

  /** Fire the next timer (moving time to it); false when none is left. */
  runNext(): boolean {
    this.dropDead();
    const timer = this.heap[0];
    if (!timer) return false;
    this.fire(timer);
    return true;
  }

  /** Fire every timer due up to `target`, then leave `now()` at `target`. */
  advanceTo(target: number): void {
    for (;;) {
      this.dropDead();
      const timer = this.heap[0];
      if (!timer || timer.at > target) break;
      this.fire(timer);
    }
    if (target > this.t) this.t = target;
  }

  advanceBy(ms: number): void {
    this.advanceTo(this.t + ms);
  }

  private add(fn: () => void, delay: number, every: number): TimerId {
    const timer: FakeTimer = { id: this.nextId++, at: this.t + delay, seq: this.seq++, every, fn };
    this.live.set(timer.id, timer);
    this.push(timer);
    return timer.id;
  }

  private fire(timer: FakeTimer): void {
    this.pop();
    if (timer.at > this.t) this.t = timer.at;
    if (timer.every > 0) {
      timer.at += timer.every;
      timer.seq = this.seq++;
      this.push(timer);
    } else {
      this.live.delete(timer.id);
    }
    timer.fn();
  }

  private dropDead(): void {
    while (this.heap.length > 0 && this.live.get(this.heap[0]!.id) !== this.heap[0]) this.pop();
  }

  private less(a: FakeTimer, b: FakeTimer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(timer: FakeTimer): void {
    const h = this.heap;
    h.push(timer);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (h.length === 0 || !last) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}
