import type { ServerResponse } from 'node:http';
import { sendJson } from '../http-util.js';
import type { RouteEnv } from './types.js';

/**
 * `POST /echo` and `POST /echo/<anything>`, on every flavor: answers `{path, body}` with the JSON
 * it was sent, after the same admission as a model request (error and hang rates, time to first
 * token, one token of capacity), so a custom handler's plumbing can be tested against model-sim.
 */
export function isEchoPath(path: string): boolean {
  return path === '/echo' || path.startsWith('/echo/');
}

export function echoRoute(path: string, errorBody: (status: number, message: string, field?: string) => unknown) {
  return (res: ServerResponse, body: unknown, env: RouteEnv): void => {
    const ok = env.core.admit(res, () => sendJson(res, 500, errorBody(500, 'simulated error (--error-rate)')));
    if (!ok) return;
    env.core.generate(res, 1, false, {
      progress() {},
      done: () => sendJson(res, 200, { path, body }),
    });
  };
}
