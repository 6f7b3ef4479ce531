/**
 * A FIFO of numeric ids stored in Float64Array chunks: 8 bytes an id, no per-item objects,
 * so a backlog of a million request ids while the engine is down takes about 8 MB.
 * `peek(n)` / `drop(n)` let a sender remove items only after their delivery was acknowledged.
 */
const CHUNK = 4096;

export class IdQueue {
  private chunks: Float64Array[] = [];
  private head = 0; // index into chunks[0]
  private tail = CHUNK; // index into the last chunk (CHUNK = full, needs a new chunk)
  private count = 0;

  get size(): number {
    return this.count;
  }

  push(id: number): void {
    if (this.tail === CHUNK) {
      this.chunks.push(new Float64Array(CHUNK));
      this.tail = 0;
    }
    this.chunks[this.chunks.length - 1]![this.tail++] = id;
    this.count++;
  }

  /** The oldest `n` ids (or fewer), without removing them. */
  peek(n: number): number[] {
    const out: number[] = [];
    let c = 0;
    let i = this.head;
    const want = Math.min(n, this.count);
    while (out.length < want) {
      const chunk = this.chunks[c]!;
      out.push(chunk[i++]!);
      if (i === CHUNK) {
        c++;
        i = 0;
      }
    }
    return out;
  }

  /** Remove the oldest `n` ids (a count that is not a positive number removes nothing). */
  drop(n: number): void {
    // Guard: a negative or NaN count would otherwise corrupt `count`.
    if (!(n > 0)) return;
    let left = Math.min(Math.floor(n), this.count);
    this.count -= left;
    while (left > 0) {
      const inFirst = (this.chunks.length === 1 ? this.tail : CHUNK) - this.head;
      if (left >= inFirst) {
        left -= inFirst;
        this.chunks.shift();
        this.head = 0;
        if (this.chunks.length === 0) this.tail = CHUNK;
      } else {
        this.head += left;
        left = 0;
      }
    }
    if (this.count === 0) {
      this.chunks = [];
      this.head = 0;
      this.tail = CHUNK;
    }
  }

  /** Approximate bytes held (for the metrics and the README's memory figure). */
  bytes(): number {
    return this.chunks.length * CHUNK * 8;
  }
}
