/**
 * Live progress on stderr: one line rewritten in place on a terminal (4 times a second), a plain
 * line every `intervalS` otherwise (CI logs, pipes), and a final line at the end.
 */
export interface Progress {
  stop(finalLine: string): void;
}

export function startProgress(render: () => string, opts: { stream?: NodeJS.WriteStream; intervalS?: number; tty?: boolean } = {}): Progress {
  const out = opts.stream ?? process.stderr;
  const tty = opts.tty ?? out.isTTY === true;
  const everyMs = tty ? 250 : Math.max(0.2, opts.intervalS ?? 5) * 1000;
  const width = () => Math.max(20, (out.columns ?? 120) - 1);
  const draw = () => {
    const line = render();
    if (tty) out.write(`\r\x1b[2K${line.slice(0, width())}`);
    else out.write(line + '\n');
  };
  const timer = setInterval(draw, everyMs);
  timer.unref?.();
  return {
    stop(finalLine) {
      clearInterval(timer);
      if (tty) out.write(`\r\x1b[2K${finalLine}\n`);
      else out.write(finalLine + '\n');
    },
  };
}

/** "12 ms" / "1.2 s" / "-" for a latency. */
export function ms(v: number): string {
  if (!Number.isFinite(v)) return '-';
  return v >= 1000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`;
}
