import type { ServerResponse } from 'node:http';
import { ContinuousBatch, type BatchTicket } from './batching.js';
import type { Random } from './random.js';
import { SerialQueue, type SerialTicket } from './serial-queue.js';

/**
 * Counters of the simulated model, as `GET /sim/stats` shows them. Invariant while
 * running: `inFlight = started - finished - aborted - errored`.
 */
export interface ModelSimStats {
  flavor: string;
  /** The model finished loading (routes answer). */
  loaded: boolean;
  /** What GET /health says once loaded (POST /sim/control can turn it off). */
  healthy: boolean;
  /** A crash was simulated; nothing answers any more. */
  crashed: boolean;
  /** Model requests admitted (valid input, model loaded). */
  started: number;
  /** Model requests answered completely (stream ended with its last chunk). */
  finished: number;
  /** Model requests whose client went away before the answer ended. */
  aborted: number;
  /** Model requests answered 500 (--error-rate). */
  errored: number;
  /** Model requests chosen to never answer (--hang-rate); in flight until the client leaves. */
  hung: number;
  /** Requests refused for bad input (4xx). */
  rejected: number;
  /** Requests answered 503 (loading, or unhealthy /health). */
  unavailable: number;
  /** Model requests started and not yet ended. */
  inFlight: number;
  /** Tokens generated (comfyui: work units), including partial work of aborted requests. */
  tokensGenerated: number;
  /** Requests generating right now (comfyui: jobs queued or running). */
  active: number;
}

/** Receives a generation's progress; the flavor turns it into its wire format. */
export interface TokenSink {
  /** `generated` tokens exist now (streaming only; increasing, from 1 to the total). */
  progress(generated: number): void;
  /** All tokens generated: write the final answer. */
  done(): void;
}

/** Behaviour that POST /sim/control may change at run time. */
export interface CoreSettings {
  tokenRate: number;
  capacity: number;
  ttftMs: number;
  errorRate: number;
  hangRate: number;
  healthy: boolean;
}

/**
 * The simulated GPU and its failure modes: admission (crash / error / hang choices),
 * generation through the continuous batch (LLM flavors) or the serial queue (ComfyUI),
 * client-disconnect detection, and the counters.
 */
export class ModelCore {
  readonly counters: Omit<ModelSimStats, 'flavor' | 'loaded' | 'healthy' | 'crashed' | 'active'> = {
    started: 0,
    finished: 0,
    aborted: 0,
    errored: 0,
    hung: 0,
    rejected: 0,
    unavailable: 0,
    inFlight: 0,
    tokensGenerated: 0,
  };
  private readonly batch: ContinuousBatch;
  private readonly serial: SerialQueue;
  private stopped = false;

  constructor(
    readonly settings: CoreSettings,
    private readonly crashAfter: number | undefined,
    private readonly random: Random,
    /** Called when the crash-after'th request is admitted; must stop the server. */
    private readonly onCrash: (admitted: number) => void,
  ) {
    this.batch = new ContinuousBatch({ tokenRate: settings.tokenRate, capacity: settings.capacity });
    this.serial = new SerialQueue(settings.tokenRate);
  }

  /** Requests generating (batch) or queued/running (serial). */
  get active(): number {
    return this.batch.size + this.serial.size;
  }

  /** Change behaviour from now on (validated by the caller). */
  update(patch: Partial<CoreSettings>): void {
    Object.assign(this.settings, patch);
    if (patch.tokenRate !== undefined || patch.capacity !== undefined) {
      this.batch.setRates({ tokenRate: this.settings.tokenRate, capacity: this.settings.capacity });
      this.serial.setRate(this.settings.tokenRate);
    }
  }

  /**
   * Count a valid model request and choose its fate. Returns true when the caller
   * should generate; otherwise the request was answered 500 (via `sendError`), left
   * hanging, or the model crashed.
   */
  admit(res: ServerResponse, sendError: () => void): boolean {
    const c = this.counters;
    c.started++;
    c.inFlight++;
    if (this.crashAfter !== undefined && c.started >= this.crashAfter) {
      this.onCrash(c.started);
      return false;
    }
    // Both draws happen for every request, so one seed gives one sequence of choices.
    const errorRoll = this.random();
    const hangRoll = this.random();
    if (errorRoll < this.settings.errorRate) {
      c.errored++;
      c.inFlight--;
      sendError();
      return false;
    }
    if (hangRoll < this.settings.hangRate) {
      c.hung++;
      this.whenClientLeaves(res, () => {
        c.aborted++;
        c.inFlight--;
      });
      return false;
    }
    return true;
  }

  /** Count a request refused for bad input. */
  rejected(): void {
    this.counters.rejected++;
  }

  /** Count a request answered 503. */
  unavailable(): void {
    this.counters.unavailable++;
  }

  /**
   * Generate `tokens` tokens: the first after ttftMs (using no capacity), the rest in
   * the continuous batch. With ttftMs 0 a 1-token request completes synchronously.
   */
  generate(res: ServerResponse, tokens: number, streaming: boolean, sink: TokenSink): void {
    const c = this.counters;
    let settled = false;
    let firstDone = false;
    let ticket: BatchTicket | undefined;
    let ttftTimer: NodeJS.Timeout | undefined;

    const finish = (): void => {
      if (settled) return;
      settled = true;
      c.finished++;
      c.inFlight--;
      c.tokensGenerated += tokens;
      sink.done();
    };
    const first = (): void => {
      ttftTimer = undefined;
      if (settled) return;
      firstDone = true;
      if (streaming) sink.progress(1);
      if (tokens <= 1) return finish();
      ticket = this.batch.add({
        work: tokens - 1,
        streaming,
        onProgress: (n) => sink.progress(1 + n),
        onComplete: finish,
      });
    };
    const leave = (): void => {
      if (settled) return;
      settled = true;
      if (ttftTimer) clearTimeout(ttftTimer);
      const generated = ticket ? 1 + this.batch.cancel(ticket) : firstDone ? 1 : 0;
      c.aborted++;
      c.inFlight--;
      c.tokensGenerated += generated;
    };

    if (this.settings.ttftMs <= 0) {
      first();
      if (settled) return; // answered in this turn: no listener needed
    } else {
      ttftTimer = setTimeout(first, this.settings.ttftMs);
    }
    this.whenClientLeaves(res, leave);
  }

  /** Run one job of `cost` work units in the serial queue (ComfyUI), then call `done`. */
  runJob(res: ServerResponse, cost: number, done: () => void): void {
    const c = this.counters;
    let settled = false;
    // biome-ignore lint/style/useConst: the job's callbacks read it, and may run before add() returns
    let ticket: SerialTicket | undefined;
    ticket = this.serial.add({
      cost,
      onComplete: () => {
        if (settled) return;
        settled = true;
        c.finished++;
        c.inFlight--;
        c.tokensGenerated += cost;
        done();
      },
    });
    const queued = ticket;
    this.whenClientLeaves(res, () => {
      if (settled) return;
      settled = true;
      this.serial.cancel(queued);
      c.aborted++;
      c.inFlight--;
    });
  }

  /** Stop generating; counters stay as they are (closes after this are not the client's doing). */
  stop(): void {
    this.stopped = true;
    this.batch.close();
    this.serial.close();
  }

  /** Call `onLeave` if the connection closes before the answer is complete. */
  private whenClientLeaves(res: ServerResponse, onLeave: () => void): void {
    const onClose = (): void => {
      if (!res.writableFinished && !this.stopped) onLeave();
    };
    if (res.destroyed || res.socket?.destroyed) onClose();
    else res.once('close', onClose);
  }
}
