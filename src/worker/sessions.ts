import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { request } from 'undici';
import { deadline } from '../common/deadline.js';
import type { Logger } from '../common/log.js';
import { errorBody } from '../common/protocol.js';
import { pythonJsonDumps } from '../common/signature.js';
import type { AuthChecker } from './auth.js';
import { checkAuthData, MAX_AUTH_DEPTH, nestedDeeperThan, type AuthData } from './envelope.js';
import type { Ledger, RequestEntry } from './ledger.js';
import type { Lifecycle } from './lifecycle.js';
import type { SessionAccess } from './proxy.js';
import type { WorkerExtension } from './worker.js';

/**
 * Sessions (PROTOCOL §6): a client holds a slot on this worker for `lifetime` seconds, renewed by
 * every request sent with its `session_id`.
 *
 * Guarantees:
 * - an open session is one working request in the ledger (workload = auth_data.cost) from create
 *   to close, and is ended exactly once (`success`), which queues its request_idx for
 *   /delete_requests/;
 * - closing (explicit /session/end or expiry found by the GC) first aborts every request still
 *   running in the session, then ends the ledger entry, then makes one best-effort POST of
 *   `{...on_close_payload, session_id}` to `modelServerUrl + on_close_route` (the model server, as
 *   the PyWorker does) with a 10 s timeout; its failure is logged, never retried; sessions still
 *   open when the worker shuts down are closed without that callback;
 * - `session_auth` is compared with the session's auth_data canonically (sorted-key JSON) and in
 *   constant time (SHA-256 digests through timingSafeEqual); neither is ever logged.
 */
export interface SessionOptions {
  /** How often expired sessions are closed (default 5000 ms). */
  gcIntervalMs?: number;
  /** Timeout of the on_close POST (default 10 000 ms). */
  closeTimeoutMs?: number;
  /** Open sessions at most (default `definition.spec.maxSessions`, else 10). */
  maxSessions?: number;
  /** How many closed session ids are remembered, so a second end still checks session_auth (default 10 000). */
  rememberClosed?: number;
  /** Clock in ms since the epoch (tests). */
  now?: () => number;
}

/** One session as the store keeps it. Times are unix seconds, like the PyWorker's. */
export interface Session {
  readonly id: string;
  /** auth_data exactly as the client sent it (returned by /session/get). */
  readonly authData: Record<string, unknown>;
  readonly authDigest: Buffer;
  /** Seconds each request pushes the expiry out by. */
  readonly lifetime: number;
  readonly createdAt: number;
  expiration: number;
  readonly onCloseRoute: string | null;
  readonly onClosePayload: Record<string, unknown> | null;
  /** The ledger entry that counts the session as one working request. */
  readonly entry: RequestEntry;
  /** Abort callbacks of the requests running in the session. */
  readonly inflight: Set<() => void>;
  closed: boolean;
}

export type CloseReason = 'ended' | 'expired' | 'shutdown';

/** The canonical text of an auth_data object: sorted keys, fixed spacing (what both sides hash). */
export function canonicalJson(value: unknown): string {
  return pythonJsonDumps(value);
}

function digest(value: unknown): Buffer {
  return createHash('sha256').update(canonicalJson(value)).digest();
}

/** True when `candidate` is the same JSON value as the one `expected` digests; constant time. */
export function sameAuth(expected: Buffer, candidate: unknown): boolean {
  const got = digest(candidate);
  return got.length === expected.length && timingSafeEqual(got, expected);
}

export interface SessionStoreOptions {
  ledger: Ledger;
  logger: Logger;
  /** Base URL of the model server: on_close_route is a path on it. */
  modelUrl: string;
  maxSessions: number;
  gcIntervalMs?: number;
  closeTimeoutMs?: number;
  rememberClosed?: number;
  now?: () => number;
}

/**
 * The open sessions of one worker. Implements the request path's `SessionAccess`; every mutation
 * of a session goes through here.
 */
export class SessionStore implements SessionAccess {
  private readonly open = new Map<string, Session>();
  /** Recently closed sessions (id → auth digest), oldest first, bounded. */
  private readonly closedIds = new Map<string, Buffer>();
  private readonly pendingCallbacks = new Set<Promise<void>>();
  private readonly ac = new AbortController();
  private gcTimer: NodeJS.Timeout | null = null;
  private readonly now: () => number;
  /** Sessions closed since start, by reason (for /metrics). */
  readonly closedTotal: Record<CloseReason, number> = { ended: 0, expired: 0, shutdown: 0 };

  constructor(private readonly o: SessionStoreOptions) {
    this.now = o.now ?? Date.now;
  }

  get size(): number {
    return this.open.size;
  }

  get maxSessions(): number {
    return this.o.maxSessions;
  }

  /** Start the GC that closes expired sessions. */
  start(): void {
    if (this.gcTimer) return;
    this.gcTimer = setInterval(() => this.collectExpired(), this.o.gcIntervalMs ?? 5000);
    this.gcTimer.unref();
  }

  /** Unix seconds now. */
  private nowS(): number {
    return this.now() / 1000;
  }

  /** Open a session; null when `maxSessions` are already open. `auth` must be verified already. */
  create(
    rawAuth: Record<string, unknown>,
    auth: AuthData,
    payload: { lifetime: number; onCloseRoute: string | null; onClosePayload: Record<string, unknown> | null },
  ): Session | null {
    if (this.open.size >= this.o.maxSessions) return null;
    const entry = this.o.ledger.create({ requestIdx: auth.request_idx, reqnum: auth.reqnum, workload: auth.cost, route: '/session/create', isSession: true });
    this.o.ledger.start(entry);
    const t = this.nowS();
    const session: Session = {
      id: randomUUID(),
      authData: rawAuth,
      authDigest: digest(rawAuth),
      lifetime: payload.lifetime,
      createdAt: t,
      expiration: t + payload.lifetime,
      onCloseRoute: payload.onCloseRoute,
      onClosePayload: payload.onClosePayload,
      entry,
      inflight: new Set(),
      closed: false,
    };
    this.open.set(session.id, session);
    return session;
  }

  /** The open session with this id (expired or not), or undefined. */
  get(id: string): Session | undefined {
    return this.open.get(id);
  }

  /** The auth digest of a recently closed session, or undefined. */
  closedDigest(id: string): Buffer | undefined {
    return this.closedIds.get(id);
  }

  isOpen(id: string): boolean {
    const s = this.open.get(id);
    return s !== undefined && s.expiration > this.nowS();
  }

  touch(id: string): void {
    const s = this.open.get(id);
    if (s) s.expiration = Math.max(s.expiration, this.nowS() + s.lifetime);
  }

  track(id: string, abort: () => void): () => void {
    const s = this.open.get(id);
    if (!s) {
      // The session closed between admission and here: the request must not outlive it.
      queueMicrotask(abort);
      return () => undefined;
    }
    s.inflight.add(abort);
    return () => {
      s.inflight.delete(abort);
    };
  }

  /** Close every session whose expiration has passed. Returns how many were closed. */
  collectExpired(): number {
    const t = this.nowS();
    let n = 0;
    for (const s of [...this.open.values()]) {
      if (s.expiration <= t) {
        this.close(s, 'expired');
        n++;
      }
    }
    return n;
  }

  /**
   * Close a session: abort its requests, end its ledger entry, then fire the on_close callback in
   * the background. Returns false when it was already closed.
   */
  close(s: Session, reason: CloseReason): boolean {
    if (s.closed) return false;
    s.closed = true;
    this.open.delete(s.id);
    this.rememberClosed(s);
    for (const abort of [...s.inflight]) {
      try {
        abort();
      } catch (err) {
        this.o.logger.warn({ session_id: s.id, err: (err as Error).message }, 'aborting a session request failed');
      }
    }
    s.inflight.clear();
    this.o.ledger.end(s.entry, 'success');
    this.closedTotal[reason]++;
    this.o.logger.info({ session_id: s.id, rid: s.entry.id, request_idx: s.entry.requestIdx, reason }, `session closed (${reason})`);
    if (s.onCloseRoute !== null && reason !== 'shutdown') {
      const p = this.callOnClose(s).finally(() => this.pendingCallbacks.delete(p));
      this.pendingCallbacks.add(p);
    }
    return true;
  }

  private rememberClosed(s: Session): void {
    this.closedIds.set(s.id, s.authDigest);
    const limit = this.o.rememberClosed ?? 10_000;
    while (this.closedIds.size > limit) this.closedIds.delete(this.closedIds.keys().next().value!);
  }

  private async callOnClose(s: Session): Promise<void> {
    const url = this.o.modelUrl.replace(/\/+$/, '') + s.onCloseRoute;
    const body = JSON.stringify({ ...(s.onClosePayload ?? {}), session_id: s.id });
    const timeoutMs = this.o.closeTimeoutMs ?? 10_000;
    const limit = deadline(timeoutMs, this.ac.signal);
    const signal = limit.signal;
    try {
      const res = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      await res.body.dump();
      this.o.logger.info({ session_id: s.id, route: s.onCloseRoute, status: res.statusCode }, 'session on_close_route called');
    } catch (err) {
      this.o.logger.warn(
        { session_id: s.id, route: s.onCloseRoute, err: (err as Error).message },
        'session on_close_route call failed (best effort, not retried)',
      );
    } finally {
      limit.dispose();
    }
  }

  /** on_close callbacks still running (tests wait on these). */
  async settled(): Promise<void> {
    while (this.pendingCallbacks.size > 0) await Promise.allSettled([...this.pendingCallbacks]);
  }

  /** Stop the GC, close what is still open (no callbacks: the model is going away), abort callbacks in flight. */
  async stop(): Promise<void> {
    if (this.gcTimer) clearInterval(this.gcTimer);
    this.gcTimer = null;
    for (const s of [...this.open.values()]) this.close(s, 'shutdown');
    // Give running callbacks a moment to finish before aborting them.
    const grace = new Promise<void>((resolve) => setTimeout(resolve, 1000).unref());
    await Promise.race([this.settled(), grace]);
    this.ac.abort();
    await this.settled();
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP routes

const ROUTE_PATH = /^\/(?!\/)[^\s?#]*$/;
const MAX_BODY = 1024 * 1024;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Bodies of session routes are small JSON: stop reading past MAX_BODY, declared or streamed. */
const limitBody = bodyLimit({
  maxSize: MAX_BODY,
  onError: (c) => c.json(errorBody(`request body too large: the limit is ${MAX_BODY} bytes`, 'body'), 413),
});

/** Read a JSON object body, or the 4xx answer to give. */
async function readJson(c: Context): Promise<{ body: Json } | { error: Response }> {
  let text: string;
  try {
    text = await c.req.text();
  } catch {
    return { error: c.json(errorBody('could not read the request body', 'body'), 400) };
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { error: c.json(errorBody('invalid JSON', 'body'), 422) };
  }
  if (!isObject(body)) return { error: c.json(errorBody('invalid JSON: the body must be an object', 'body'), 422) };
  return { body };
}

/** Parse `payload` of /session/create: `{lifetime=60, on_close_route?, on_close_payload?}`. */
export function parseCreatePayload(
  raw: unknown,
): { ok: true; value: { lifetime: number; onCloseRoute: string | null; onClosePayload: Json | null } } | { ok: false; problems: Json | string } {
  if (raw === undefined || raw === null) return { ok: true, value: { lifetime: 60, onCloseRoute: null, onClosePayload: null } };
  if (!isObject(raw)) return { ok: false, problems: 'must be an object' };
  const problems: Json = {};
  let lifetime = 60;
  if (raw.lifetime !== undefined && raw.lifetime !== null) {
    const n = typeof raw.lifetime === 'string' && raw.lifetime.trim() !== '' ? Number(raw.lifetime) : raw.lifetime;
    if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) problems.lifetime = 'must be a positive number of seconds';
    else lifetime = n;
  }
  let onCloseRoute: string | null = null;
  if (raw.on_close_route !== undefined && raw.on_close_route !== null && raw.on_close_route !== '') {
    if (typeof raw.on_close_route !== 'string' || !ROUTE_PATH.test(raw.on_close_route))
      problems.on_close_route = 'must be a path on the model server starting with "/"';
    else onCloseRoute = raw.on_close_route;
  }
  let onClosePayload: Json | null = null;
  if (raw.on_close_payload !== undefined && raw.on_close_payload !== null) {
    if (!isObject(raw.on_close_payload)) problems.on_close_payload = 'must be a JSON object (session_id is added to it)';
    else onClosePayload = raw.on_close_payload;
  }
  if (Object.keys(problems).length > 0) return { ok: false, problems };
  return { ok: true, value: { lifetime, onCloseRoute, onClosePayload } };
}

/** Parse `{session_id, session_auth}` of get/health/end. */
function parseSessionRef(body: Json): { ok: true; id: string; auth: unknown } | { ok: false; problems: Json } {
  const problems: Json = {};
  const sid = body.session_id;
  if (sid === undefined || sid === null) problems.session_id = 'field missing';
  else if (typeof sid !== 'string' && typeof sid !== 'number') problems.session_id = 'must be a string';
  if (body.session_auth === undefined || body.session_auth === null) problems.session_auth = 'field missing';
  else if (!isObject(body.session_auth)) problems.session_auth = 'must be the auth_data object the session was created with';
  // Hashed by recursive code (canonicalJson): a deeply nested value must be a 422, not a stack overflow.
  else if (nestedDeeperThan(body.session_auth, MAX_AUTH_DEPTH)) problems.session_auth = `nested deeper than ${MAX_AUTH_DEPTH} levels`;
  if (Object.keys(problems).length > 0) return { ok: false, problems };
  return { ok: true, id: String(sid), auth: body.session_auth };
}

/** What /session/get and /session/end show of a session. */
export function describeSession(s: Session): Json {
  return {
    session_id: s.id,
    auth_data: s.authData,
    lifetime: s.lifetime,
    expiration: s.expiration,
    created_at: s.createdAt,
    on_close_route: s.onCloseRoute,
    on_close_payload: s.onClosePayload,
  };
}

export interface SessionRouteDeps {
  store: SessionStore;
  auth: AuthChecker;
  lifecycle: Lifecycle;
  ledger: Ledger;
  logger: Logger;
}

const unknownSession = (c: Context) => c.json(errorBody('unknown session', 'session_id'), 400);
const authDiffers = (c: Context) => c.json(errorBody('session_auth does not match the session', 'session_auth'), 401);

/** POST /session/end on any app (the main one and the plain-HTTP internal one). */
export function addSessionEndRoute(app: Hono, d: SessionRouteDeps): void {
  app.post('/session/end', limitBody, async (c) => {
    const r = await readJson(c);
    if ('error' in r) return r.error;
    const ref = parseSessionRef(r.body);
    if (!ref.ok) return c.json(ref.problems, 422);
    const s = d.store.get(ref.id);
    if (!s) {
      const closed = d.store.closedDigest(ref.id);
      if (!closed) return unknownSession(c);
      if (!sameAuth(closed, ref.auth)) return authDiffers(c);
      // As the PyWorker: a session ended twice is an unknown session the second time.
      return c.json({ error: 'session already closed', field: 'session_id' }, 400);
    }
    if (!sameAuth(s.authDigest, ref.auth)) return authDiffers(c);
    d.store.close(s, 'ended');
    // The PyWorker answers the id alone (never the auth_data and its signature).
    return c.json({ ended: true, removed_session: s.id }, 200);
  });
}

/**
 * POST /session/create, /session/get, /session/health and /session/end on the worker's app.
 * Answers (PROTOCOL §6): create 201 `{session_id, expiration}` | 401 signature | 422 body |
 * 429 max_sessions | 503 draining; get 200 | 400 unknown (or already closed) | 401 | 422;
 * health 200 `{ok}` (false when unknown, closed or expired) | 401 | 422; end 200
 * `{ended: true, removed_session: <session id>}` | 400 unknown or already closed | 401 | 422. Closed
 * ids are remembered (bounded) so end still checks session_auth first on a closed one.
 */
export function addSessionRoutes(app: Hono, d: SessionRouteDeps): void {
  app.post('/session/create', limitBody, async (c) => {
    if (!d.lifecycle.admitting) return c.json(errorBody('worker is draining: create the session on another worker', 'worker'), 503, { 'retry-after': '5' });
    const r = await readJson(c);
    if ('error' in r) return r.error;
    const problems: Json = {};
    const { auth, problems: authProblems } = checkAuthData(r.body.auth_data);
    if (typeof authProblems === 'string' || Object.keys(authProblems).length > 0) problems.auth_data = authProblems;
    const payload = parseCreatePayload(r.body.payload);
    if (!payload.ok) problems.payload = payload.problems;
    if (Object.keys(problems).length > 0 || !auth || !payload.ok) return c.json(problems, 422);
    const rawAuth = r.body.auth_data as Json;
    if (!d.auth.check(auth)) {
      const entry = d.ledger.create({ requestIdx: auth.request_idx, reqnum: auth.reqnum, workload: auth.cost, route: '/session/create', isSession: true });
      d.ledger.reject(entry);
      d.logger.info({ rid: entry.id, request_idx: auth.request_idx }, 'session refused: signature does not verify');
      return c.json(errorBody('signature does not verify', 'auth_data.signature'), 401);
    }
    const s = d.store.create(rawAuth, auth, payload.value);
    if (!s) {
      const entry = d.ledger.create({ requestIdx: auth.request_idx, reqnum: auth.reqnum, workload: auth.cost, route: '/session/create', isSession: true });
      d.ledger.reject(entry);
      d.logger.info({ rid: entry.id, request_idx: auth.request_idx, max_sessions: d.store.maxSessions }, 'session refused: max_sessions open');
      return c.json(errorBody(`max_sessions (${d.store.maxSessions}) sessions are open`, 'max_sessions'), 429);
    }
    d.logger.info({ rid: s.entry.id, session_id: s.id, request_idx: auth.request_idx, lifetime: s.lifetime, workload: auth.cost }, 'session created');
    return c.json({ session_id: s.id, expiration: s.expiration }, 201);
  });

  app.post('/session/get', limitBody, async (c) => {
    const r = await readJson(c);
    if ('error' in r) return r.error;
    const ref = parseSessionRef(r.body);
    if (!ref.ok) return c.json(ref.problems, 422);
    const s = d.store.get(ref.id);
    if (!s) {
      const closed = d.store.closedDigest(ref.id);
      if (closed && !sameAuth(closed, ref.auth)) return authDiffers(c);
      return closed ? c.json(errorBody('session closed', 'session_id'), 400) : unknownSession(c);
    }
    if (!sameAuth(s.authDigest, ref.auth)) return authDiffers(c);
    return c.json(describeSession(s), 200);
  });

  app.post('/session/health', limitBody, async (c) => {
    const r = await readJson(c);
    if ('error' in r) return r.error;
    const ref = parseSessionRef(r.body);
    if (!ref.ok) return c.json(ref.problems, 422);
    const s = d.store.get(ref.id);
    if (!s) {
      const closed = d.store.closedDigest(ref.id);
      if (closed && !sameAuth(closed, ref.auth)) return authDiffers(c);
      return c.json({ ok: false }, 200);
    }
    if (!sameAuth(s.authDigest, ref.auth)) return authDiffers(c);
    return c.json({ ok: d.store.isOpen(s.id) }, 200);
  });

  addSessionEndRoute(app, d);
}

/** The sessions extension, with a handle on its store once the worker has set it up. */
export interface SessionsExtension extends WorkerExtension {
  store(): SessionStore | null;
}

/**
 * Sessions as a worker extension: the four routes on the main app, /session/end alone on the
 * internal plain-HTTP listener (WORKER_HTTP_PORT), the store as the request path's SessionAccess.
 */
export function sessionsExtension(opts: SessionOptions = {}): SessionsExtension {
  let store: SessionStore | null = null;
  return {
    name: 'sessions',
    store: () => store,
    setup(ctx) {
      store = new SessionStore({
        ledger: ctx.ledger,
        logger: ctx.logger,
        modelUrl: ctx.config.model.url,
        maxSessions: opts.maxSessions ?? ctx.config.maxSessions,
        gcIntervalMs: opts.gcIntervalMs,
        closeTimeoutMs: opts.closeTimeoutMs,
        rememberClosed: opts.rememberClosed,
        now: opts.now,
      });
      const deps: SessionRouteDeps = { store, auth: ctx.auth, lifecycle: ctx.lifecycle, ledger: ctx.ledger, logger: ctx.logger };
      addSessionRoutes(ctx.app, deps);
      const internalApp = new Hono();
      addSessionEndRoute(internalApp, deps);
      store.start();
      const s = store;
      return { sessions: s, internalApp, close: () => s.stop() };
    },
  };
}
