import { defaultDataDir } from './data-dir.js';
import { Server as NetServerClass, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { createAdaptorServer, serve, type ServerType } from '@hono/node-server';
import { createLogger, type Logger } from '../common/log.js';
import { createRealClock, type Clock } from './clock.js';
import { loadAutoscalerConfig, parseAutoscalerConfig, type AutoscalerConfig, type AutoscalerConfigInput } from './config.js';
import { Engine } from './engine.js';
import { Journal } from './journal.js';
import { migrateLegacyJournal } from './legacy-journal.js';
import { startStaging, validateRecord } from './store.js';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { createApp } from './http.js';
import { createServer as createHttpServer, type RequestListener, type ServerOptions } from 'node:http';
import { attachProtocolLane, withProtocolFastPath, type FastPathOptions } from './http-fast.js';
import type { FastLane } from '../worker/http1/fast-lane.js';
import { answerClientErrors } from '../worker/http1/client-errors.js';
import { mountDashboard, type DashboardOptions } from './dashboard/routes.js';
import { loadOrCreateAccountKey, loadOrCreateAdminKey, loadOrCreateKeys } from './keys.js';
import { createProvider, providerFactory } from './providers/index.js';
import type { Provider } from './providers/types.js';

/** Largest body the API accepts (the hono app and the fast path alike). */
const MAX_BODY_BYTES = 1024 * 1024;
/**
 * Between ticks the requests that changed are encoded for the journal every this long (the tick's
 * save then encodes at most the last 10 ms of changes, and writes and fsyncs them all): at 10k
 * requests a second a save would otherwise encode 20k records at once (over 100 ms of event loop).
 * 10 ms, not 25: each slice is then about 1.3 ms at 10k requests a second instead of about 3 ms
 * (p99 8–12 ms instead of 10–18), for 100 timer callbacks a second.
 */
const STAGE_MS = 10;

/** Options of `startAutoscaler`. */
export interface StartAutoscalerOptions {
  /** A config object (validated here) or the path of a JSON/YAML config file. */
  config: AutoscalerConfigInput | AutoscalerConfig | string;
  /** Port to listen on; 0 = ephemeral (default 0). */
  port?: number;
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** Where the key and the generated admin key live (default: config `data_dir`, else the user's state dir: defaultDataDir()). */
  dataDir?: string;
  /** `--repair`: open a damaged state journal by keeping every intact record (the damaged file is moved aside). */
  repair?: boolean;
  /** A ready provider; default: built from the config's `provider` section. */
  provider?: Provider;
  /** Default: the real clock. */
  clock?: Clock;
  logger?: Logger;
  /** Overrides env AUTOSCALER_ADMIN_KEY and the config's `admin_key`. */
  adminKey?: string;
  /** Overrides env AUTOSCALER_ACCOUNT_KEY and the config's `account_key`. */
  accountKey?: string;
  /** Liveness probe of a worker URL (default GET {url}/healthz). */
  probe?: (url: string, timeoutMs: number) => Promise<boolean>;
  /** The dashboard at `/` and `/dashboard` (docs/dashboard.md); false leaves it out. */
  dashboard?: DashboardOptions | false;
  /**
   * A reload's successor: the predecessor's listening socket, already accepting (its connections
   * wait, unread, in `pending` until this server takes them). `port`/`host` are then ignored.
   */
  inherited?: { listener: NetServer; pending: Socket[] };
}

/** A running autoscaler. */
export interface RunningAutoscaler {
  /** The listening socket (what a reload hands to its successor). */
  listener: NetServer;
  /**
   * The first half of a reload: stop accepting (the successor holds the same socket, so clients
   * wait in its backlog rather than being refused), let the requests in flight finish, save the
   * state a last time and close the journal. The provider is left running: the successor adopts
   * its workers from the journal.
   */
  handOver(): Promise<void>;
  /** `http://host:port`, also the REPORT_ADDR given to workers unless `public_url` is set. */
  url: string;
  port: number;
  engine: Engine;
  provider: Provider;
  adminKey: string;
  /** The file the admin key was read from or generated into; null when it came from env or config. */
  adminKeyFile: string | null;
  /** Where the signing key (and a generated admin key) are kept. */
  dataDir: string;
  /** The account key the Vast SDK uses (console calls, /get_endpoint_workers/). */
  accountKey: string;
  publicKeyPem: string;
  /** api_key of every endpoint, by name (including generated ones). */
  apiKeys: Record<string, string>;
  /** Stop ticking, close the provider (ending its workers' processes) and the HTTP server. Idempotent. */
  close(): Promise<void>;
}

/**
 * Start the engine and its HTTP API. Resolves once listening; the key is generated on first
 * start in the data dir. Throws (ConfigError listing every problem) on a bad config.
 */
export async function startAutoscaler(opts: StartAutoscalerOptions): Promise<RunningAutoscaler> {
  const cfg = typeof opts.config === 'string' ? loadAutoscalerConfig(opts.config) : parseAutoscalerConfig(opts.config);
  const dataDir = opts.dataDir ?? cfg.data_dir ?? defaultDataDir();
  const clock = opts.clock ?? createRealClock();
  const logger = opts.logger ?? createLogger('autoscaler');
  // An unknown provider kind is refused before any key is generated, so a bad config leaves nothing
  // behind in the data dir; the provider itself is made after the journal (see below).
  if (!opts.provider) providerFactory(cfg.provider as Record<string, unknown>);
  const keys = loadOrCreateKeys(dataDir, cfg.private_key_path);
  const admin = loadOrCreateAdminKey(dataDir, opts.adminKey ?? process.env.AUTOSCALER_ADMIN_KEY ?? cfg.admin_key);
  const account = loadOrCreateAccountKey(dataDir, opts.accountKey ?? process.env.AUTOSCALER_ACCOUNT_KEY ?? cfg.account_key);
  if (keys.created) logger.info({ event: 'key_created', path: keys.keyPath }, 'generated the route-signing key');
  if (admin.created) logger.info({ event: 'admin_key_created', path: admin.path }, 'generated an admin key (read it from this file)');
  if (account.created) logger.info({ event: 'account_key_created', path: account.path }, 'generated an account key for the Vast SDK (read it from this file)');
  let store: Journal | undefined;
  if (cfg.persist) {
    mkdirSync(dataDir, { recursive: true });
    // Damage other than a torn last record throws JournalDamagedError (file and offset) unless repairing.
    const journalPath = join(dataDir, 'engine-state.jsonl');
    // A data dir of the previous release (plain JSON lines): migrated to checked records first.
    const migrated = migrateLegacyJournal(journalPath, { validate: validateRecord, repair: opts.repair ?? false });
    if (migrated)
      logger.warn(
        {
          event: 'journal_migrated',
          path: journalPath,
          legacy_lines: migrated.lines,
          records: migrated.records,
          skipped: migrated.skipped,
          dropped_bytes: migrated.droppedBytes,
          next_ids: migrated.ids,
          legacy_copy: migrated.movedTo,
        },
        "the state journal was in the previous release's format: migrated to checked records (the old file kept aside)",
      );
    store = new Journal(journalPath, { validate: validateRecord, repair: opts.repair ?? false });
    if (store.recovered.droppedBytes > 0)
      logger.warn(
        { event: 'journal_torn', path: store.path, dropped_bytes: store.recovered.droppedBytes },
        'the state journal ended in a torn write (a crash): the partial record was dropped',
      );
    if (store.recovered.skipped > 0)
      logger.warn(
        {
          event: 'journal_repaired',
          path: store.path,
          skipped: store.recovered.skipped,
          first_bad_offset: store.recovered.firstBadOffset,
          moved_to: store.recovered.movedTo,
        },
        'the state journal was damaged: every intact record kept, the damaged file moved aside',
      );
  }

  // After the journal: a damaged one stops start-up before the provider touches any worker of an earlier run.
  const provider = opts.provider ?? (await createProvider({ config: cfg.provider as Record<string, unknown>, clock, logger, dataDir }));

  const host = opts.host ?? '127.0.0.1';
  let selfUrl = '';
  const engine = new Engine({
    clock,
    provider,
    privateKey: keys.privateKeyPem,
    logger,
    timing: cfg.engine,
    reportAddrs: () => [cfg.public_url ?? selfUrl],
    probe: opts.probe,
    strictAuth: cfg.strict_auth ? { ttlSeconds: cfg.strict_auth.ttl_seconds } : undefined,
    accountKey: account.key,
    store,
    repairStore: opts.repair ?? false,
  });
  // The journal first: an endpoint it remembers keeps its state (admin changes included); the
  // config only adds endpoints not seen before.
  engine.restore();
  for (const ep of cfg.endpoints) if (!engine.endpoints.has(ep.name)) engine.addEndpoint(ep);

  const stopStaging = engine.store ? startStaging(engine.store, STAGE_MS) : null;

  const app = createApp(engine, { adminKey: admin.key, accountKey: account.key, publicKeyPem: keys.publicKeyPem, logger, maxBodyBytes: MAX_BODY_BYTES });
  const dashboard = opts.dashboard === false ? null : mountDashboard(app, { engine, clock, providerKind: provider.kind }, opts.dashboard);
  // The hot protocol routes are answered without the hono app (http-fast.ts), everything else by it.
  const hot: FastPathOptions = {
    routes: {
      '/route': (b) => engine.route(b),
      '/worker_status': (b) => engine.workerStatus(b),
      '/delete_requests': (b) => engine.deleteRequests(b),
    },
    maxBodyBytes: MAX_BODY_BYTES,
    logger,
  };
  // Each connection is read by the fast lane first (the worker's: well-formed POSTs of the hot
  // routes answered straight off the socket); anything else goes to node:http, whose listener
  // answers the hot routes itself too and hands the rest to the hono app.
  let lane: FastLane | null = null;
  const createServer = ((o: ServerOptions, listener: RequestListener) => {
    const s = createHttpServer(o, withProtocolFastPath(listener, hot));
    // A request node:http cannot parse gets a JSON 4xx naming what was wrong, after the answers before it.
    answerClientErrors(s);
    lane = attachProtocolLane(s, hot);
    return s;
  }) as typeof createHttpServer;
  let server: ServerType;
  let listener: NetServer;
  if (opts.inherited) {
    // Take over the predecessor's socket: connections it queued are served now, later ones as they come.
    const inherited = opts.inherited;
    server = createAdaptorServer({ fetch: app.fetch, createServer });
    listener = inherited.listener;
    listener.removeAllListeners('connection');
    listener.on('connection', (sock: Socket) => server.emit('connection', sock));
    for (const sock of inherited.pending.splice(0)) server.emit('connection', sock);
  } else {
    server = await new Promise((resolve, reject) => {
      const s = serve({ fetch: app.fetch, port: opts.port ?? 0, hostname: host, createServer }, () => resolve(s));
      s.once('error', reject);
    });
    listener = server as unknown as NetServer;
  }
  const port = (listener.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  selfUrl = `http://${urlHost}:${port}`;
  await engine.adoptWorkers();
  engine.start();
  logger.info({ event: 'listening', url: selfUrl, endpoints: cfg.endpoints.map((e) => e.name), provider: provider.kind }, 'autoscaler listening');

  let closing: Promise<void> | null = null;
  // Every connection, so a hand-over can let each finish its request rather than reset it.
  const sockets = new Set<Socket>();
  server.on('connection', (sock: Socket) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
  });
  let handingOver = false;
  // While handing over, every answer says `Connection: close`: the client's next request opens a new
  // connection, which the successor accepts.
  server.prependListener('request', (_req, res) => {
    if (handingOver) res.shouldKeepAlive = false;
  });
  /**
   * Stop accepting without resetting anything: a connection accepted but not yet read is answered
   * (http.Server.close would drop it as idle: a reset for its client). Waits until every connection
   * ended, at most `graceMs` (then the idle keep-alive ones left are closed).
   */
  const stopAccepting = async (graceMs: number) => {
    handingOver = true;
    // The lane's answers say `Connection: close` too, and its connections idle for 50 ms end.
    (lane as FastLane | null)?.drain();
    // net.Server's close, not http.Server's: that one also drops idle (accepted, unread) connections.
    NetServerClass.prototype.close.call(listener);
    (server as { keepAliveTimeout?: number }).keepAliveTimeout = 50;
    const end = Date.now() + graceMs;
    while (sockets.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    for (const sock of sockets) sock.destroy();
  };
  return {
    listener,
    handOver() {
      closing ??= (async () => {
        dashboard?.close();
        await stopAccepting(3000);
        stopStaging?.();
        engine.close();
        try {
          store?.close();
        } catch (err) {
          logger.error({ event: 'store_close_failed', error: err instanceof Error ? err.message : String(err) }, 'the last state could not be written');
        }
        logger.info({ event: 'handed_over' }, 'autoscaler handed its socket and state to its successor');
      })();
      return closing;
    },
    url: selfUrl,
    port,
    engine,
    provider,
    adminKey: admin.key,
    adminKeyFile: admin.path,
    dataDir,
    accountKey: account.key,
    publicKeyPem: keys.publicKeyPem,
    apiKeys: Object.fromEntries([...engine.endpoints.values()].map((ep) => [ep.name, ep.apiKey])),
    close() {
      closing ??= (async () => {
        dashboard?.close();
        stopStaging?.();
        engine.close();
        try {
          store?.close();
        } catch (err) {
          logger.error({ event: 'store_close_failed', error: err instanceof Error ? err.message : String(err) }, 'the last state could not be written');
        }
        await provider.close();
        if (listener !== (server as unknown)) listener.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          (lane as FastLane | null)?.close();
          (lane as FastLane | null)?.destroyAll();
          (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
        logger.info({ event: 'closed' }, 'autoscaler closed');
      })();
      return closing;
    },
  };
}
