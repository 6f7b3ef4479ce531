import { SAMPLE_KEYS, type Sample, type SampleColumns } from './client/frames.js';

/**
 * The last `capacity` history rows of one endpoint, column by column, in fixed memory:
 * pushing past capacity overwrites the oldest row. Guarantees: `columns()` returns rows
 * oldest first, never more than `capacity`, each column the same length.
 */
export class SampleRing {
  private readonly cols: Array<Array<number | null>>;
  private next = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!(capacity >= 1) || !Number.isInteger(capacity)) throw new Error(`SampleRing capacity must be a positive integer, got ${capacity}`);
    this.cols = SAMPLE_KEYS.map(() => new Array<number | null>(capacity).fill(null));
  }

  /** Rows held now. */
  get size(): number {
    return this.count;
  }

  /** Append a row, dropping the oldest when full. */
  push(row: Sample): void {
    SAMPLE_KEYS.forEach((k, i) => {
      this.cols[i]![this.next] = row[k];
    });
    this.next = (this.next + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
  }

  /** A copy of the rows, oldest first. */
  columns(): SampleColumns {
    const start = (this.next - this.count + this.capacity) % this.capacity;
    const out: Record<string, Array<number | null>> = {};
    SAMPLE_KEYS.forEach((k, i) => {
      const col = this.cols[i]!;
      const ordered = new Array<number | null>(this.count);
      for (let j = 0; j < this.count; j++) ordered[j] = col[(start + j) % this.capacity] ?? null;
      out[k] = ordered;
    });
    return out as SampleColumns;
  }
}
