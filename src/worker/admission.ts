/**
 * Admission for handlers that serve one request at a time: a strict FIFO gate.
 * Guarantees: requests pass in the order they called `acquire`; a waiter that gives up (its
 * signal aborts) leaves the line without ever holding the gate; `release` hands the gate to the
 * next live waiter, so the gate is never held by a request that has gone.
 */
interface Waiter {
  resolve: () => void;
  reject: (reason: unknown) => void;
  gone: boolean;
}

export class FifoGate {
  private held = false;
  private queue: Waiter[] = [];
  private head = 0;

  /** Waiting requests (not counting the holder). */
  get waiting(): number {
    let n = 0;
    for (let i = this.head; i < this.queue.length; i++) if (!this.queue[i]!.gone) n++;
    return n;
  }

  get busy(): boolean {
    return this.held;
  }

  /** Resolves when the caller holds the gate; rejects with the signal's reason if it aborts first. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject, gone: false };
      this.queue.push(w);
      signal?.addEventListener(
        'abort',
        () => {
          if (w.gone) return;
          w.gone = true;
          reject(signal.reason);
        },
        { once: true },
      );
      // Keep the waiter's resolve tied to the signal's lifetime only; nothing else to clean up.
      const origResolve = w.resolve;
      w.resolve = () => {
        w.gone = true;
        origResolve();
      };
    });
  }

  release(): void {
    while (this.head < this.queue.length) {
      const w = this.queue[this.head++]!;
      if (!w.gone) {
        w.resolve();
        this.compact();
        return; // the gate passes straight to w: still held
      }
    }
    this.compact();
    this.held = false;
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}
