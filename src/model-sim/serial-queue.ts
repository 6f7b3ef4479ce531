/**
 * One job at a time in arrival order, like ComfyUI's prompt queue: a job of `cost`
 * runs for `cost / rate` seconds once the job before it is done. Start and end times
 * are kept exact (a late timer does not delay the next job), so the measured rate of
 * a saturated queue is `rate`.
 */

/** A job for the serial queue. */
export interface SerialJob {
  /** Work units (> 0); the job runs `cost / rate` seconds. */
  readonly cost: number;
  /** The job finished; called once, never after `cancel`. */
  onComplete(): void;
}

/** What `add` returns: pass it to `cancel` when the client goes away. */
export interface SerialTicket {
  readonly job: SerialJob;
  readonly arrivedAt: number;
  /** Exact end time once running. */
  endsAt: number | undefined;
  left: boolean;
}

/** FIFO, one job running, `rate` work units per second. */
export class SerialQueue {
  private readonly waiting: SerialTicket[] = [];
  private running: SerialTicket | undefined;
  /** Exact end of the last job that ran (ms); the next starts no earlier. */
  private lastEnd = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private closed = false;

  constructor(
    private rate: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Jobs waiting plus the one running. */
  get size(): number {
    return this.waiting.length + (this.running ? 1 : 0);
  }

  /** Change the speed for jobs that start from now on. */
  setRate(rate: number): void {
    this.rate = rate;
  }

  add(job: SerialJob): SerialTicket {
    if (this.closed) throw new Error('queue is closed');
    const ticket: SerialTicket = { job, arrivedAt: this.now(), endsAt: undefined, left: false };
    this.waiting.push(ticket);
    if (!this.running) this.startNext();
    return ticket;
  }

  /** Drop a waiting job, or stop the running one and start the next at once. */
  cancel(ticket: SerialTicket): void {
    if (ticket.left) return;
    ticket.left = true;
    if (ticket === this.running) {
      this.clearWakeup();
      this.running = undefined;
      this.lastEnd = this.now();
      this.startNext();
    } else {
      const i = this.waiting.indexOf(ticket);
      if (i >= 0) this.waiting.splice(i, 1);
    }
  }

  close(): void {
    this.closed = true;
    this.clearWakeup();
    this.waiting.length = 0;
    this.running = undefined;
  }

  private startNext(): void {
    const next = this.waiting.shift();
    if (!next) return;
    this.running = next;
    const start = Math.max(next.arrivedAt, this.lastEnd);
    next.endsAt = start + (next.job.cost / this.rate) * 1000;
    this.wakeAt(next.endsAt);
  }

  private wakeAt(at: number): void {
    const delay = at - this.now();
    // Timers fire up to ~1 ms late: wake a little early, then meet the end on setImmediate.
    if (delay < 1) this.immediate = setImmediate(this.tick);
    else this.timer = setTimeout(this.tick, delay - 0.9);
  }

  private tick = (): void => {
    this.timer = undefined;
    this.immediate = undefined;
    const job = this.running;
    if (this.closed || !job || job.endsAt === undefined) return;
    if (this.now() < job.endsAt) {
      this.wakeAt(job.endsAt);
      return;
    }
    job.left = true;
    this.running = undefined;
    this.lastEnd = job.endsAt;
    this.startNext();
    job.job.onComplete();
  };

  private clearWakeup(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
  }
}
