import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ReportStamp } from './client/frames.js';

/**
 * The last `nodeworker simulate` run as the dashboard shows it: `report.json` (and its
 * `timeline.svg`) in the simulation's output directory, read from disk on demand so a run
 * made while the autoscaler is up shows without a restart.
 */

/** Size and mtime of `<dir>/report.json`, or null when there is none. Never throws. */
export function reportStamp(dir: string): ReportStamp | null {
  try {
    const st = statSync(join(dir, 'report.json'));
    return st.isFile() ? { mtimeMs: Math.round(st.mtimeMs), size: st.size } : null;
  } catch {
    return null;
  }
}

/** The report, or an error naming why it cannot be shown. Never throws. */
export function readReport(dir: string): { ok: true; report: unknown } | { ok: false; message: string } {
  const file = join(dir, 'report.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return { ok: false, message: `no report.json in ${dir}: run \`nodeworker simulate --trace FILE --out ${dir}\`` };
  }
  try {
    return { ok: true, report: JSON.parse(text) };
  } catch {
    return { ok: false, message: `${file} is not valid JSON (a run still writing it?)` };
  }
}

/** The run's `timeline.svg`, or null. */
export function readTimelineSvg(dir: string): string | null {
  try {
    return readFileSync(join(dir, 'timeline.svg'), 'utf8');
  } catch {
    return null;
  }
}
