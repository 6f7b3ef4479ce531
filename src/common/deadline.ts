/**
 * A signal that aborts when `parent` aborts or `timeoutMs` passes, whichever comes first, and that
 * leaves nothing behind once `dispose()` is called. `AbortSignal.any([parent, ...])` keeps a WeakRef
 * to every signal made from a long-lived parent in the parent's dependants until it is collected
 * and the set is swept (issue 21 row 18: one per health probe, for the life of the worker); here the
 * parent holds one listener per call, removed by `dispose`.
 */
export interface Deadline {
  readonly signal: AbortSignal;
  /** True when it was the timeout (not the parent) that aborted. */
  readonly timedOut: boolean;
  /** Clear the timer and drop the listener on the parent (call it in a finally). */
  dispose(): void;
}

export function deadline(timeoutMs: number, parent?: AbortSignal): Deadline {
  const ac = new AbortController();
  let timedOut = false;
  const onParent = () => ac.abort(parent!.reason);
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort(new DOMException(`no answer within ${timeoutMs} ms`, 'TimeoutError'));
  }, timeoutMs);
  if (parent?.aborted) ac.abort(parent.reason);
  else parent?.addEventListener('abort', onParent, { once: true });
  return {
    signal: ac.signal,
    get timedOut() {
      return timedOut;
    },
    dispose() {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onParent);
    },
  };
}
