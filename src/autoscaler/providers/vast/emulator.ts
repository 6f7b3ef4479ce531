import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { Logger } from '../../../common/log.js';
import { fieldErrors } from '../../params.js';
import { sameSecret } from '../../registry.js';
import { LocalProvider, localConfigSchema } from '../local.js';
import type { RateKind } from './config.js';
import { type Market, type MachineTypeSpec, marketSchema } from './market.js';
import { matchesQuery, type OfferQuery } from './query.js';

/**
 * A Vast.ai API emulator on loopback: the subset of `/api/v0` the Vast provider uses (search
 * offers, create from an offer, list/show, start/stop/label, destroy) with Vast's answer shapes
 * (string HostPorts, `owner=me`, `{"instances": {...}}` for one, 200 with `success: false`, 429
 * with no Retry-After past a per-endpoint threshold). Offers come from a market of machine types;
 * an instance is a real local process: the package's on_start.sh with model-sim and the worker
 * (run by the local provider's machinery), started once the emulated container has gone from
 * created through loading. Faults are injected with `POST /admin/faults`.
 */

export const emulatorOptionsSchema = z.strictObject({
  /** The account's API key: every `/api/v0` call must carry it. */
  api_key: z.string().min(8, 'at least 8 characters'),
  /** Seconds an instance stays created (actual_status null), then loading, before its processes start. */
  create_seconds: z.number().min(0).default(1),
  loading_seconds: z.number().min(0).default(1),
  /** Seconds a started instance stays loading before its processes start again. */
  start_seconds: z.number().min(0).default(0.5),
  /** Minimum seconds between two calls of one endpoint kind per key (Vast's thresholds by default). */
  rate_limits: z
    .strictObject({
      search: z.number().min(0).default(1),
      list: z.number().min(0).default(1),
      show: z.number().min(0).default(2),
      manage: z.number().min(0).default(1),
      destroy: z.number().min(0).default(3),
      create: z.number().min(0).default(4.5),
    })
    .default({ search: 1, list: 1, show: 2, manage: 1, destroy: 3, create: 4.5 }),
  /** Instances of the account that are someone else's business (no processes): the provider must leave them alone. */
  foreign_instances: z.number().int().min(0).max(10).default(0),
  /** Extra environment of every instance's processes (e.g. BENCHMARK_MAX_TOKENS for quick benchmarks). */
  instance_env: z.record(z.string(), z.string()).default({}),
});
export type EmulatorOptions = z.output<typeof emulatorOptionsSchema>;
export type EmulatorOptionsInput = z.input<typeof emulatorOptionsSchema>;

/** What `POST /admin/faults` accepts: counts of upcoming faults, or an instance to hit now. */
export const faultsSchema = z.strictObject({
  /** The next N creates find their offer gone (404 no_such_ask). */
  offer_gone: z.number().int().min(0).optional(),
  /** The next N instances created stay loading forever. */
  stuck_loading: z.number().int().min(0).optional(),
  /** The next N API calls answer 429. */
  rate_limit_burst: z.number().int().min(0).optional(),
  /** The next N API calls answer 500/503. */
  server_errors: z.number().int().min(0).optional(),
  /** The next N creates happen but their answer is lost (502): the client must find the instance by its label. */
  lost_answers: z.number().int().min(0).optional(),
  /** The next N manage calls (PUT /instances/{id}/) answer 200 with success: false. */
  success_false: z.number().int().min(0).optional(),
  /** These instances die now: their processes are killed, actual_status becomes exited. */
  kill: z.array(z.number().int()).optional(),
  /** These instances' hosts go offline: processes gone, actual_status offline. */
  offline: z.array(z.number().int()).optional(),
  /** These instances' containers error: status_msg "Error ...", processes gone. */
  error: z.array(z.number().int()).optional(),
});
export type Faults = z.infer<typeof faultsSchema>;

interface Machine {
  id: number;
  hostId: number;
  type: MachineTypeSpec;
  /** The offer id it is listed under now (changes when rented and freed, or when the offer goes). */
  offerId: number;
  instance: number | null;
}

interface EmuInstance {
  id: number;
  machine: Machine;
  label: string | null;
  actual: string | null;
  intended: 'running' | 'stopped';
  statusMsg: string;
  env: Record<string, string>;
  workerPort: number;
  disk: number;
  image: string | null;
  startDate: number;
  stuck: boolean;
  /** No processes: an instance of someone else's (foreign_instances). */
  foreign: boolean;
  /** A pending state change (cancelled by the next one). */
  timer: NodeJS.Timeout | null;
  /** Processes up (the local machinery has this id). */
  procs: boolean;
  gen: number;
}

const KIND_OF_ROUTE = (method: string, path: string): RateKind | null => {
  if (method === 'POST' && /^\/api\/v0\/bundles\/?$/.test(path)) return 'search';
  if (method === 'PUT' && /^\/api\/v0\/asks\/\d+\/?$/.test(path)) return 'create';
  if (method === 'GET' && /^\/api\/v0\/instances\/?$/.test(path)) return 'list';
  if (method === 'GET' && /^\/api\/v0\/instances\/\d+\/?$/.test(path)) return 'show';
  if (method === 'PUT' && /^\/api\/v0\/instances\/\d+\/?$/.test(path)) return 'manage';
  if (method === 'DELETE' && /^\/api\/v0\/instances\/\d+\/?$/.test(path)) return 'destroy';
  return null;
};

export class VastEmulator {
  readonly opts: EmulatorOptions;
  readonly market: Market;
  private readonly server: Server;
  private readonly log: Logger;
  private readonly machines: Machine[] = [];
  private readonly instances = new Map<number, EmuInstance>();
  private readonly local: LocalProvider;
  private readonly lastCall = new Map<string, number>();
  private readonly pending = { offer_gone: 0, stuck_loading: 0, rate_limit_burst: 0, server_errors: 0, success_false: 0, lost_answers: 0 };
  /** What happened, for tests and the report. */
  readonly stats = { calls: 0, throttled: 0, server_errors: 0, success_false: 0, offers_gone: 0, created: 0, destroyed: 0, started: 0, stopped: 0 };
  private nextInstanceId = 7_100_000 + Math.floor(Math.random() * 1000) * 10;
  private nextOfferId = 41_000_000;
  private closed = false;
  url = '';

  constructor(o: { options: EmulatorOptionsInput; market: unknown; dataDir: string; logger: Logger; script?: string }) {
    const parsed = emulatorOptionsSchema.safeParse(o.options);
    if (!parsed.success) throw new Error(`emulator options invalid: ${JSON.stringify(fieldErrors(parsed.error))}`);
    const market = marketSchema.safeParse(o.market);
    if (!market.success) throw new Error(`market invalid: ${JSON.stringify(fieldErrors(market.error, 'market'))}`);
    this.opts = parsed.data;
    this.market = market.data;
    this.log = o.logger;
    let mid = 50_000;
    for (const type of this.market.machine_types)
      for (let i = 0; i < type.count; i++) this.machines.push({ id: ++mid, hostId: 900 + mid, type, offerId: this.nextOfferId++, instance: null });
    this.local = new LocalProvider({
      config: localConfigSchema.parse({ kind: 'local', script: o.script, env: this.opts.instance_env, kill_timeout_seconds: 5, stop_timeout_seconds: 20 }),
      dataDir: o.dataDir,
      logger: o.logger,
    });
    this.local.subscribe((e) => {
      const inst = this.instances.get(e.workerId);
      if (!inst || e.kind !== 'exited') return;
      inst.procs = false;
      if (inst.actual === 'running' || inst.actual === 'loading') {
        inst.actual = 'exited';
        inst.statusMsg = `container exited: ${e.reason ?? ''}`.trim();
      }
    });
    for (let i = 0; i < this.opts.foreign_instances; i++) {
      const id = this.newInstanceId();
      const m: Machine = { id: 70_000 + i, hostId: 1, type: this.market.machine_types[0]!, offerId: 0, instance: id };
      this.instances.set(id, {
        ...this.blank(id, m),
        label: `someone-else-${i}`,
        actual: 'running',
        foreign: true,
      });
    }
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  async listen(port = 0, host = '127.0.0.1'): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(port, host, resolve));
    this.url = `http://${host}:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  /** Every instance of the account, as `GET /instances?owner=me` lists them. */
  list(): Array<Record<string, unknown>> {
    return [...this.instances.values()].map((i) => this.view(i));
  }

  /** Pids of an instance's processes (tests). */
  pidsOf(id: number): number[] {
    return this.local.pidsOf(id);
  }

  /** Every pid of every instance. */
  allPids(): number[] {
    return this.local.allPids();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const i of this.instances.values()) if (i.timer) clearTimeout(i.timer);
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    await this.local.close();
  }

  // ------------------------------------------------------------------ HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://x');
      const method = req.method ?? 'GET';
      const body = await readBody(req);
      if (url.pathname.startsWith('/admin/')) return this.admin(method, url, body, req, res);
      if (!url.pathname.startsWith('/api/v0/')) return send(res, 404, { success: false, error: 'not_found', msg: `no route ${method} ${url.pathname}` });
      const key = (req.headers.authorization ?? '').replace(/^Bearer\s+/i, '') || url.searchParams.get('api_key') || '';
      if (!sameSecret(key, this.opts.api_key)) return send(res, 401, { success: false, error: 'auth_error', msg: 'Invalid user key' });
      const kind = KIND_OF_ROUTE(method, url.pathname);
      if (!kind) return send(res, 404, { success: false, error: 'not_found', msg: `no route ${method} ${url.pathname}` });
      this.stats.calls++;
      // Faults first (a refused call does nothing), then the per-endpoint threshold.
      if (this.pending.rate_limit_burst > 0) {
        this.pending.rate_limit_burst--;
        return this.throttle(res, kind);
      }
      if (this.pending.server_errors > 0) {
        this.pending.server_errors--;
        this.stats.server_errors++;
        return send(res, this.stats.server_errors % 2 ? 500 : 503, { success: false, error: 'server_error', msg: 'internal error (injected)' });
      }
      const ident = `${kind}:${key}:${req.socket.remoteAddress}`;
      const last = this.lastCall.get(ident) ?? 0;
      if (Date.now() - last < this.opts.rate_limits[kind] * 1000) return this.throttle(res, kind);
      this.lastCall.set(ident, Date.now());
      const json = body.length > 0 ? parseJson(body) : {};
      if (json === null) return send(res, 400, { success: false, error: 'invalid_args', msg: 'body: not a JSON object' });
      const id = Number(/\/(\d+)\/?$/.exec(url.pathname)?.[1]);
      switch (kind) {
        case 'search':
          return send(res, 200, { offers: this.search(json) });
        case 'create':
          return this.create(res, id, json);
        case 'list':
          if (url.searchParams.get('owner') !== 'me') return send(res, 400, { success: false, error: 'invalid_args', msg: 'owner: must be "me"' });
          return send(res, 200, { instances: this.list() });
        case 'show': {
          const inst = this.instances.get(id);
          if (!inst) return send(res, 404, { success: false, error: 'no_such_instance', msg: `instance ${id} not found` });
          return send(res, 200, { instances: this.view(inst) });
        }
        case 'manage':
          return this.manage(res, id, json);
        case 'destroy':
          return this.destroy(res, id);
      }
    } catch (err) {
      // Never crash on a request: a 500 that says what failed.
      this.log.error({ event: 'vast_emulator', error: String(err) }, 'emulator request failed');
      if (!res.headersSent) send(res, 500, { success: false, error: 'server_error', msg: 'emulator error' });
    }
  }

  private throttle(res: ServerResponse, kind: RateKind): void {
    this.stats.throttled++;
    send(res, 429, { success: false, error: 'rate_limited', msg: `API requests too frequent: endpoint threshold=${this.opts.rate_limits[kind]}` });
  }

  private admin(method: string, url: URL, body: string, req: IncomingMessage, res: ServerResponse): void {
    const key = (req.headers.authorization ?? '').replace(/^Bearer\s+/i, '');
    if (!sameSecret(key, this.opts.api_key)) return send(res, 401, { success: false, error: 'auth_error', msg: 'Invalid user key' });
    if (method === 'GET' && url.pathname === '/admin/stats') return send(res, 200, { ...this.stats, pending: { ...this.pending } });
    if (method === 'POST' && url.pathname === '/admin/faults') {
      const parsed = faultsSchema.safeParse(parseJson(body) ?? undefined);
      if (!parsed.success) return send(res, 400, { success: false, error: 'invalid_args', fields: fieldErrors(parsed.error) });
      this.inject(parsed.data);
      return send(res, 200, { success: true, pending: { ...this.pending } });
    }
    send(res, 404, { success: false, error: 'not_found', msg: `no route ${method} ${url.pathname}` });
  }

  /** Apply faults (also callable from code). */
  inject(f: Faults): void {
    for (const k of ['offer_gone', 'stuck_loading', 'rate_limit_burst', 'server_errors', 'success_false', 'lost_answers'] as const)
      if (f[k] !== undefined) this.pending[k] += f[k];
    const hit = (ids: number[] | undefined, status: string, msg: string) => {
      for (const id of ids ?? []) {
        const inst = this.instances.get(id);
        if (!inst || inst.foreign) continue;
        this.cancel(inst);
        inst.actual = status;
        inst.statusMsg = msg;
        void this.endProcs(inst, 'kill');
      }
    };
    hit(f.kill, 'exited', 'container exited with code 137');
    hit(f.offline, 'offline', 'host offline');
    hit(f.error, 'exited', 'Error response from daemon: failed to start container (injected)');
  }

  // ------------------------------------------------------------------ API

  private offerOf(m: Machine, storageGb: number): Record<string, unknown> {
    const t = m.type;
    const storageDph = (t.storage_cost * storageGb) / 720;
    return {
      id: m.offerId,
      ask_contract_id: m.offerId,
      machine_id: m.id,
      host_id: m.hostId,
      num_gpus: t.num_gpus,
      gpu_name: t.gpu_name,
      gpu_ram: t.gpu_ram,
      cuda_max_good: 12.4,
      disk_space: 200,
      inet_down: 1000,
      inet_up: 1000,
      dph_base: t.dph_base,
      dph_total: round(t.dph_base + storageDph),
      storage_cost: t.storage_cost,
      min_bid: round(t.dph_base * 0.6),
      reliability: t.reliability,
      reliability2: t.reliability,
      verification: 'verified',
      verified: true,
      external: false,
      rentable: true,
      rented: false,
      geolocation: t.geolocation,
      public_ipaddr: '127.0.0.1',
      direct_port_count: 10,
    };
  }

  private search(q: Record<string, unknown>): Array<Record<string, unknown>> {
    const { order, type: _type, limit, allocated_storage, disable_bundling: _b, target_reliability: _t, ...filters } = q;
    const storage = Number(allocated_storage ?? 5) || 5;
    let offers = this.machines.filter((m) => m.instance === null).map((m) => this.offerOf(m, storage));
    offers = offers.filter((o) => matchesQuery(o, filters as OfferQuery));
    const ord = Array.isArray(order) && Array.isArray(order[0]) ? (order[0] as [string, string]) : ['score', 'desc'];
    const [field = 'score', dir = 'desc'] = ord;
    offers.sort((a, b) => {
      const x = Number(a[field] ?? 0);
      const y = Number(b[field] ?? 0);
      return dir === 'desc' ? y - x : x - y;
    });
    return offers.slice(0, Math.max(1, Number(limit) || 64));
  }

  private create(res: ServerResponse, offerId: number, b: Record<string, unknown>): void {
    const m = this.machines.find((x) => x.offerId === offerId && x.instance === null);
    if (m && this.pending.offer_gone > 0) {
      // Someone else took it between the search and the create.
      this.pending.offer_gone--;
      this.stats.offers_gone++;
      m.offerId = this.nextOfferId++;
      return send(res, 404, { success: false, error: 'no_such_ask', msg: `ask ${offerId} is no longer available` });
    }
    if (!m) return send(res, 404, { success: false, error: 'no_such_ask', msg: `ask ${offerId} is no longer available` });
    if (typeof b.image !== 'string' && typeof b.template_hash_id !== 'string')
      return send(res, 400, { success: false, error: 'invalid_args', msg: 'image: an image or a template_hash_id is required' });
    const disk = b.disk === undefined ? 10 : Number(b.disk);
    if (!Number.isFinite(disk) || disk < 8) return send(res, 400, { success: false, error: 'invalid_args', msg: 'disk: at least 8 GB' });
    if (b.env !== undefined && (typeof b.env !== 'object' || b.env === null || Array.isArray(b.env)))
      return send(res, 400, { success: false, error: 'invalid_args', msg: 'env: must be an object of strings' });
    const env: Record<string, string> = {};
    let workerPort = 3000;
    for (const [k, v] of Object.entries((b.env as Record<string, unknown>) ?? {})) {
      const port = /^-p\s+(\d+):(\d+)$/.exec(k);
      if (port) workerPort = Number(port[2]);
      else env[k] = String(v);
    }
    const id = this.newInstanceId();
    m.instance = id;
    const inst: EmuInstance = {
      ...this.blank(id, m),
      label: typeof b.label === 'string' ? b.label : null,
      env,
      workerPort,
      disk,
      image: typeof b.image === 'string' ? b.image : null,
    };
    if (this.pending.stuck_loading > 0) {
      this.pending.stuck_loading--;
      inst.stuck = true;
    }
    this.instances.set(id, inst);
    this.stats.created++;
    this.log.info({ event: 'vast_emulator', op: 'create', instance: id, machine: m.id, gpu: m.type.gpu_name, label: inst.label }, 'instance created');
    if (this.pending.lost_answers > 0) {
      this.pending.lost_answers--;
      send(res, 502, { success: false, error: 'bad_gateway', msg: 'upstream timed out (injected; the instance was created)' });
    } else send(res, 200, { success: true, new_contract: id, instance_api_key: `inst-${id}` });
    this.boot(inst, this.opts.create_seconds, this.opts.loading_seconds);
  }

  private manage(res: ServerResponse, id: number, b: Record<string, unknown>): void {
    const inst = this.instances.get(id);
    if (!inst) return send(res, 404, { success: false, error: 'no_such_instance', msg: `instance ${id} not found` });
    if (this.pending.success_false > 0) {
      this.pending.success_false--;
      this.stats.success_false++;
      return send(res, 200, { success: false, msg: 'scheduling: machine busy, try again (injected)' });
    }
    if (typeof b.label === 'string') inst.label = b.label;
    if (b.state === undefined) return send(res, 200, { success: true });
    if (b.state !== 'running' && b.state !== 'stopped') return send(res, 400, { success: false, error: 'invalid_args', msg: 'state: running or stopped' });
    if (inst.foreign) return send(res, 200, { success: true });
    if (b.state === 'stopped' && inst.intended !== 'stopped') {
      inst.intended = 'stopped';
      this.cancel(inst);
      this.stats.stopped++;
      const gen = inst.gen;
      void this.endProcs(inst, 'stop').then(() => {
        // A dead container (exited, offline: an injected error or kill) stays dead when stopped, as on
        // Vast: stopping it must not turn it into a clean parked instance that a start would revive.
        if (inst.gen === gen && inst.intended === 'stopped' && !DEAD.has(inst.actual ?? '')) inst.actual = 'stopped';
      });
    } else if (b.state === 'running' && inst.intended !== 'running') {
      if (DEAD.has(inst.actual ?? '')) return send(res, 200, { success: false, msg: `instance is ${inst.actual}: cannot start` });
      inst.intended = 'running';
      this.stats.started++;
      this.boot(inst, 0, this.opts.start_seconds);
    }
    send(res, 200, { success: true });
  }

  private destroy(res: ServerResponse, id: number): void {
    const inst = this.instances.get(id);
    if (!inst) return send(res, 404, { success: false, error: 'no_such_instance', msg: `instance ${id} not found` });
    this.cancel(inst);
    this.instances.delete(id);
    if (!inst.foreign) {
      inst.machine.instance = null;
      inst.machine.offerId = this.nextOfferId++;
    }
    this.stats.destroyed++;
    void this.local.destroy(id);
    this.log.info({ event: 'vast_emulator', op: 'destroy', instance: id }, 'instance destroyed');
    send(res, 200, { success: true });
  }

  // ------------------------------------------------------------------ instance life

  private blank(id: number, m: Machine): EmuInstance {
    return {
      id,
      machine: m,
      label: null,
      actual: null,
      intended: 'running',
      statusMsg: '',
      env: {},
      workerPort: 3000,
      disk: 10,
      image: null,
      startDate: Date.now() / 1000,
      stuck: false,
      foreign: false,
      timer: null,
      procs: false,
      gen: 0,
    };
  }

  private newInstanceId(): number {
    // Vast ids are global across accounts: they jump.
    this.nextInstanceId += 1 + Math.floor(Math.random() * 7);
    return this.nextInstanceId;
  }

  private cancel(inst: EmuInstance): void {
    inst.gen++;
    if (inst.timer) clearTimeout(inst.timer);
    inst.timer = null;
  }

  /** created (null) for `nullSeconds`, loading for `loadingSeconds`, then the processes start and it runs. */
  private boot(inst: EmuInstance, nullSeconds: number, loadingSeconds: number): void {
    this.cancel(inst);
    const gen = inst.gen;
    inst.statusMsg = '';
    const step = (s: number, fn: () => void) => {
      inst.timer = setTimeout(() => {
        inst.timer = null;
        if (inst.gen === gen && !this.closed) fn();
      }, s * 1000);
    };
    if (nullSeconds > 0) inst.actual = null;
    step(nullSeconds, () => {
      inst.actual = 'loading';
      inst.statusMsg = 'Pulling image / starting container';
      if (inst.stuck) return; // stays loading forever
      step(loadingSeconds, () => void this.run(inst, gen));
    });
  }

  private async run(inst: EmuInstance, gen: number): Promise<void> {
    const env = {
      ...inst.env,
      MODEL_SIM_ARGS: inst.env.MODEL_SIM_ARGS ?? inst.machine.type.model_sim_args,
      CONTAINER_API_KEY: `inst-${inst.id}`,
      GPU_NAME: inst.machine.type.gpu_name,
    };
    try {
      if (this.local.portsOf(inst.id)) await this.local.start(inst.id);
      else
        await this.local.create({
          workerId: inst.id,
          masterToken: inst.env.MASTER_TOKEN ?? '',
          reportAddrs: (inst.env.REPORT_ADDR ?? '').split(',').filter(Boolean),
          endpoint: '',
          workergroup: '',
          machineType: inst.machine.type.gpu_name,
          searchParams: '',
          launch: { env, ...(inst.env.BACKEND ? { backend: inst.env.BACKEND } : {}) },
          dollarsPerHour: 0,
          storageDollarsPerHour: 0,
        });
    } catch (err) {
      if (inst.gen !== gen) return;
      inst.actual = 'exited';
      inst.statusMsg = `Error: container failed to start: ${err instanceof Error ? err.message : String(err)}`;
      return;
    }
    if (inst.gen !== gen || !this.instances.has(inst.id)) {
      // Destroyed or stopped while starting.
      if (!this.instances.has(inst.id)) void this.local.destroy(inst.id);
      return;
    }
    inst.procs = true;
    inst.actual = 'running';
    inst.statusMsg = 'success, running';
  }

  private async endProcs(inst: EmuInstance, how: 'stop' | 'kill'): Promise<void> {
    if (!this.local.portsOf(inst.id)) return;
    if (how === 'kill') {
      for (const pid of this.local.pidsOf(inst.id)) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
      return;
    }
    await this.local.stop(inst.id).catch(() => undefined);
  }

  private view(i: EmuInstance): Record<string, unknown> {
    const t = i.machine.type;
    const ports = this.local.portsOf(i.id);
    const running = i.actual === 'running' && (i.procs || i.foreign);
    return {
      id: i.id,
      label: i.label,
      actual_status: i.actual,
      intended_status: i.intended,
      cur_state: i.intended === 'running' ? 'running' : 'stopped',
      status_msg: i.statusMsg,
      public_ipaddr: '127.0.0.1',
      ports: running && ports ? { [`${i.workerPort}/tcp`]: [{ HostIp: '0.0.0.0', HostPort: String(ports.worker) }] } : {},
      machine_id: i.machine.id,
      host_id: i.machine.hostId,
      gpu_name: t.gpu_name,
      num_gpus: t.num_gpus,
      dph_total: round(t.dph_base + (t.storage_cost * i.disk) / 720),
      dph_base: t.dph_base,
      storage_cost: t.storage_cost,
      disk_space: i.disk,
      start_date: i.startDate,
      image_uuid: i.image,
      extra_env: Object.entries(i.env)
        .filter(([k]) => !/TOKEN|KEY/i.test(k))
        .map(([k, v]) => [k, v]),
    };
  }
}

const DEAD = new Set(['exited', 'offline', 'unknown']);

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 1_000_000) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseJson(text: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;
