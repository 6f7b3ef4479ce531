import { randomBytes } from 'node:crypto';
import { parseProviderSection } from '../section.js';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../../common/log.js';
import { fieldErrors } from '../../params.js';
import type { AdoptResult, AdoptSpec, Provider, ProviderContext, ProviderEvent, WorkerHandle, WorkerSpec } from '../types.js';
import { VastApi, VastApiError } from './api.js';
import { type VastConfig, vastConfigSchema, type VastLaunch, vastLaunchSchema } from './config.js';
import { CreateLedger } from './ledger.js';
import { type OfferQuery, parseQuery, QueryError } from './query.js';

/**
 * The Vast provider: workers are rented Vast.ai instances.
 *
 * - create: search offers (`POST /bundles/`) with the workergroup's `search_params` plus the
 *   machine type's query, take the cheapest offer within the type's declared price that is not on
 *   an avoided machine (the engine's policy chooses the type by learned perf per dollar, and
 *   explores unmeasured types first; within one GPU type perf per dollar is 1/price), journal the
 *   create with its unique label, then `PUT /asks/{offer}/`. An offer gone (404/410 no_such_ask)
 *   is searched again without it; a create whose answer was lost is looked for by its label.
 * - start / stop: `PUT /instances/{id}/` with state running / stopped; destroy: `DELETE`.
 * - a poll of `GET /instances?owner=me` follows states: running with the worker port mapped →
 *   `running` (with the URL from public_ipaddr and the HostPort); exited, offline, unknown, an
 *   `Error` status message, or created/loading past `boot_timeout_seconds` → the instance is
 *   destroyed, its machine avoided, and `exited` is reported; a labelled instance of this engine
 *   that nobody owns is destroyed.
 * - adopt (each start): the engine's remembered workers are matched with the account's instances
 *   labelled for this engine; the rest of those are destroyed. Instances of other labels are never
 *   touched.
 */

/** What the provider knows of one of its instances. */
interface Inst {
  id: number;
  label: string;
  endpoint: string;
  workergroup: string;
  machineId: number;
  /** $/h while running (GPU + storage), and its storage part (billed while stopped too). */
  dph: number;
  storageDph: number;
  /** The engine wants it running (created or started), not stopped. */
  wantRunning: boolean;
  /** When the current boot (create or start) began, ms. */
  bootAt: number;
  /** `running` was reported for the current boot. */
  announced: boolean;
  /** Last seen actual_status. */
  status: string | null;
  url?: string;
  /** Made by dry-run: never sent. */
  dry?: boolean;
  /** A start/stop call for it failed: a release that follows is the API's fault, not the machine's. */
  callFailed?: boolean;
}

/** An instance as `GET /instances` lists it (only the fields read here). */
export interface VastInstance {
  id: number;
  label?: string | null;
  actual_status?: string | null;
  intended_status?: string | null;
  cur_state?: string | null;
  status_msg?: string | null;
  public_ipaddr?: string | null;
  ports?: Record<string, Array<{ HostIp?: string; HostPort?: string }>> | null;
  machine_id?: number;
  dph_total?: number;
  storage_cost?: number;
  disk_space?: number;
}

interface Offer {
  id: number;
  machine_id: number;
  dph_total: number;
  gpu_name?: string;
  reliability?: number;
  storage_cost?: number;
}

const LABEL_PREFIX = 'nw';
const DEAD = new Set(['exited', 'offline', 'unknown']);
/** Keys whose values a dry-run log line shows as <redacted>. */
const SECRET_ENV = /TOKEN|KEY|SECRET|PASSWORD|AUTH/i;

export interface VastProviderOptions {
  config: VastConfig;
  dataDir: string;
  logger: Logger;
  /** The API key (from VAST_API_KEY or the key file); unused in dry run. */
  apiKey: string;
}

export class VastProvider implements Provider {
  readonly kind = 'vast';
  readonly engineId: string;
  readonly api: VastApi;
  private readonly cfg: VastConfig;
  private readonly log: Logger;
  private readonly ledger: CreateLedger;
  private readonly insts = new Map<number, Inst>();
  /** Labels of creates in flight (their instance may exist before the answer arrives). */
  private readonly creating = new Set<string>();
  /** Instances whose destroy failed: retried at each poll. */
  private readonly toDestroy = new Set<number>();
  /** Creates in flight by the worker id the engine proposed, and whether the engine released it meanwhile. */
  private readonly pendingCreates = new Map<number, { cancelled: boolean }>();
  /** Ids destroyed lately: a listing taken before the destroy still shows them. */
  private readonly released = new Set<number>();
  /** machine_id → until when (ms) its offers are skipped. */
  private readonly avoided = new Map<number, number>();
  private readonly listeners = new Set<(e: ProviderEvent) => void>();
  private pollTimer: NodeJS.Timeout | null = null;
  private polling = false;
  private adopted = false;
  private closed = false;
  private dryIds = 1_000_000_000;

  constructor(opts: VastProviderOptions) {
    this.cfg = opts.config;
    this.log = opts.logger;
    const dir = join(opts.dataDir, 'vast');
    mkdirSync(dir, { recursive: true });
    this.engineId = opts.config.engine_id ?? engineIdOf(dir);
    this.ledger = new CreateLedger(join(dir, 'creates.jsonl'));
    this.api = new VastApi({
      baseUrl: opts.config.base_url,
      apiKey: opts.apiKey,
      limits: opts.config.rate_limits,
      timeoutMs: opts.config.request_timeout_seconds * 1000,
      maxAttempts: opts.config.max_attempts,
      logger: opts.logger,
    });
    this.log.info(
      {
        event: 'vast_provider',
        engine_id: this.engineId,
        base_url: opts.config.base_url,
        dry_run: opts.config.dry_run,
        max_dollars_per_hour: opts.config.max_dollars_per_hour ?? null,
      },
      opts.config.dry_run ? 'Vast provider in dry run: calls are logged, none is made' : 'Vast provider ready',
    );
  }

  subscribe(listener: (e: ProviderEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: ProviderEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** The label prefix of this engine's instances. */
  get labelPrefix(): string {
    return `${LABEL_PREFIX}.${this.engineId}.`;
  }

  /** Instance ids the provider holds now (tests compare them with the emulator's list). */
  instanceIds(): number[] {
    return [...this.insts.keys()].sort((a, b) => a - b);
  }

  /** Machines avoided now. */
  avoidedMachines(): number[] {
    const now = Date.now();
    return [...this.avoided].filter(([, until]) => until > now).map(([m]) => m);
  }

  // ------------------------------------------------------------------ create

  async create(spec: WorkerSpec): Promise<WorkerHandle> {
    if (this.closed) throw new Error('vast provider is closed');
    const launch = this.launchOf(spec);
    const query = this.queryOf(spec, launch);
    const label = `${this.labelPrefix}${spec.endpoint}.${spec.workergroup}.${randomBytes(4).toString('hex')}`;
    const body = this.createBody(spec, launch, label);
    if (this.cfg.dry_run) {
      const id = this.dryIds++;
      this.log.info({ event: 'vast_dry_run', call: 'POST /api/v0/bundles/', body: query }, 'dry run: would search offers');
      this.log.info({ event: 'vast_dry_run', call: 'PUT /api/v0/asks/{best offer}/', body: safeBody(body) }, 'dry run: would create an instance');
      this.insts.set(id, { ...this.blankInst(id, label, spec), dry: true, dph: spec.dollarsPerHour });
      return { id };
    }
    // The engine may release the worker (by the id it proposed) before the create answers.
    const pending = { cancelled: false };
    this.pendingCreates.set(spec.workerId, pending);
    try {
      const handle = await this.rent(spec, query, body, label);
      if (pending.cancelled) {
        this.log.info(
          { event: 'vast_instance', instance: handle.id, worker: spec.workerId },
          'worker released while its instance was being created: destroying it',
        );
        await this.destroyNow(handle.id).catch(() => this.toDestroy.add(handle.id));
      }
      return handle;
    } finally {
      this.pendingCreates.delete(spec.workerId);
    }
  }

  private async rent(spec: WorkerSpec, query: Record<string, unknown>, body: Record<string, unknown>, label: string): Promise<WorkerHandle> {
    const tried = new Set<number>();
    let lastErr: Error | null = null;
    for (let attempt = 0; attempt < this.cfg.create_attempts; attempt++) {
      const offer = await this.bestOffer(spec, query, tried);
      tried.add(offer.id);
      this.checkSpend(spec.endpoint, offer.dph_total);
      this.ledger.append({
        op: 'create',
        label,
        offer: offer.id,
        machine: offer.machine_id,
        endpoint: spec.endpoint,
        workergroup: spec.workergroup,
        dph: offer.dph_total,
        at: Date.now(),
      });
      this.creating.add(label);
      try {
        const res = await this.api.call<{ new_contract?: number }>('create', 'PUT', `/asks/${offer.id}/`, body, { idempotent: false });
        const id = Number(res.new_contract);
        if (!Number.isInteger(id) || id <= 0) throw new VastApiError('create answered without new_contract', 200, 'bad_answer');
        return this.created(spec, label, offer, id);
      } catch (err) {
        if (err instanceof VastApiError && (err.status === 0 || err.status >= 500)) {
          // The create may have happened with its answer lost: its label tells.
          const found = await this.findByLabel(label);
          if (found) return this.created(spec, label, offer, found.id);
        }
        this.ledger.append({ op: 'failed', label, at: Date.now(), reason: err instanceof Error ? err.message : String(err) });
        lastErr = err instanceof Error ? err : new Error(String(err));
        if (err instanceof VastApiError && (err.status === 404 || err.status === 410 || err.code === 'no_such_ask')) {
          this.log.warn({ event: 'vast_offer_gone', offer: offer.id, machine: offer.machine_id }, 'offer gone: searching again');
          continue;
        }
        if (err instanceof VastApiError && (err.status === 0 || err.status >= 500 || err.code === 'success_false')) continue;
        throw err;
      } finally {
        this.creating.delete(label);
      }
    }
    throw lastErr ?? new Error('no offer could be rented');
  }

  private created(spec: WorkerSpec, label: string, offer: Offer, id: number): WorkerHandle {
    this.ledger.append({ op: 'created', label, id, at: Date.now() });
    const inst = this.blankInst(id, label, spec);
    inst.machineId = offer.machine_id;
    inst.dph = offer.dph_total;
    inst.storageDph = ((offer.storage_cost ?? 0) * (this.launchOf(spec).disk ?? 16)) / 720;
    this.insts.set(id, inst);
    this.log.info(
      { event: 'vast_instance', op: 'created', instance: id, offer: offer.id, machine: offer.machine_id, gpu: offer.gpu_name, dph: offer.dph_total, label },
      'Vast instance created',
    );
    this.ensurePolling();
    return { id };
  }

  private blankInst(id: number, label: string, spec: Pick<WorkerSpec, 'endpoint' | 'workergroup'>): Inst {
    return {
      id,
      label,
      endpoint: spec.endpoint,
      workergroup: spec.workergroup,
      machineId: 0,
      dph: 0,
      storageDph: 0,
      wantRunning: true,
      bootAt: Date.now(),
      announced: false,
      status: null,
    };
  }

  /** The workergroup's launch over the provider's defaults (env merged by key); needs an image or a template. */
  private launchOf(spec: WorkerSpec): VastLaunch {
    const parsed = vastLaunchSchema.safeParse(spec.launch ?? {});
    if (!parsed.success) {
      const f = fieldErrors(parsed.error, 'launch');
      throw new Error(
        `invalid launch settings: ${Object.entries(f)
          .map(([k, v]) => `${k}: ${v}`)
          .join('; ')}`,
      );
    }
    const l: VastLaunch = { ...this.cfg.launch, ...parsed.data, env: { ...(this.cfg.launch.env ?? {}), ...(parsed.data.env ?? {}) } };
    if (!l.image && !l.template_hash_id) throw new Error('launch.image: an image or a template_hash_id is required');
    return l;
  }

  private queryOf(spec: WorkerSpec, launch: VastLaunch): OfferQuery & Record<string, unknown> {
    let user: OfferQuery;
    let typeQuery: OfferQuery;
    try {
      user = parseQuery(spec.searchParams);
      typeQuery = parseQuery(this.cfg.machine_queries[spec.machineType] ?? `gpu_name=${spec.machineType.replace(/\s/g, '_')}`);
    } catch (err) {
      if (err instanceof QueryError) throw new Error(err.message);
      throw err;
    }
    // The CLI's defaults, unless the query says otherwise.
    return {
      verified: { eq: true },
      external: { eq: false },
      rentable: { eq: true },
      rented: { eq: false },
      ...user,
      ...typeQuery,
      order: [['dph_total', 'asc']],
      type: 'on-demand',
      limit: this.cfg.offers_limit,
      allocated_storage: launch.disk ?? 16,
    } as OfferQuery & Record<string, unknown>;
  }

  /** The cheapest acceptable offer; throws when none is left. */
  private async bestOffer(spec: WorkerSpec, query: Record<string, unknown>, tried: Set<number>): Promise<Offer> {
    const res = await this.api.call<{ offers?: Offer[] }>('search', 'POST', '/bundles/', query, { idempotent: true });
    const now = Date.now();
    const offers = (res.offers ?? [])
      .filter((o) => Number.isInteger(o.id) && typeof o.dph_total === 'number')
      .filter((o) => !tried.has(o.id) && !((this.avoided.get(o.machine_id) ?? 0) > now))
      // The machine type's declared price is the ceiling: the engine plans perf per dollar with it.
      .filter((o) => spec.dollarsPerHour <= 0 || o.dph_total <= spec.dollarsPerHour * 1.000001)
      .sort((a, b) => a.dph_total - b.dph_total || (b.reliability ?? 0) - (a.reliability ?? 0));
    const best = offers[0];
    if (!best)
      throw new Error(
        `no offer for ${spec.workergroup}/${spec.machineType} at ≤ $${spec.dollarsPerHour}/h (${res.offers?.length ?? 0} found, ${this.avoidedMachines().length} machines avoided)`,
      );
    return best;
  }

  /** Spend guard: refuse a create that would take the endpoint's hourly cost past the cap. */
  private checkSpend(endpoint: string, dph: number): void {
    const cap = this.cfg.max_dollars_per_hour;
    if (cap === undefined) return;
    const now = this.hourlyCost(endpoint);
    if (now + dph > cap + 1e-9) {
      this.log.warn({ event: 'vast_spend_guard', endpoint, dollars_per_hour: round(now), offer_dph: dph, cap }, 'spend guard: create refused');
      throw new Error(`spend guard: endpoint ${endpoint} costs $${round(now)}/h, one more at $${dph}/h would pass max_dollars_per_hour ${cap}`);
    }
  }

  /** What an endpoint's instances cost per hour now (running: GPU + storage; stopped: storage). */
  hourlyCost(endpoint: string): number {
    let sum = 0;
    for (const i of this.insts.values()) if (i.endpoint === endpoint) sum += i.wantRunning ? i.dph : i.storageDph;
    return sum;
  }

  private createBody(spec: WorkerSpec, launch: VastLaunch, label: string): Record<string, unknown> {
    const port = this.cfg.worker_port;
    const env: Record<string, string> = {
      ...(launch.env ?? {}),
      BACKEND: launch.backend ?? launch.env?.BACKEND ?? 'openai',
      WORKER_PORT: String(port),
      MASTER_TOKEN: spec.masterToken,
      REPORT_ADDR: spec.reportAddrs.join(','),
      [`-p ${port}:${port}`]: '1',
    };
    const body: Record<string, unknown> = {
      client_id: 'me',
      label,
      disk: launch.disk ?? 16,
      env,
      onstart: launch.onstart ?? 'bash /opt/nodeworker/on_start.sh',
      target_state: 'running',
      cancel_unavail: true,
    };
    if (launch.image) body.image = launch.image;
    if (launch.template_hash_id) body.template_hash_id = launch.template_hash_id;
    else body.runtype = launch.runtype ?? 'args';
    if (launch.image_login) body.image_login = launch.image_login;
    return body;
  }

  private async findByLabel(label: string): Promise<VastInstance | null> {
    try {
      return (await this.list()).find((i) => i.label === label) ?? null;
    } catch {
      return null;
    }
  }

  private async list(): Promise<VastInstance[]> {
    const res = await this.api.call<{ instances?: VastInstance[] }>('list', 'GET', '/instances?owner=me', undefined, { idempotent: true });
    return Array.isArray(res.instances) ? res.instances : [];
  }

  // ------------------------------------------------------------------ start / stop / destroy

  async start(id: number): Promise<void> {
    const inst = this.insts.get(id);
    if (!inst) throw new Error(`no Vast instance ${id}`);
    if (inst.dry) return this.dry(`PUT /api/v0/instances/${id}/`, { state: 'running' });
    this.checkSpend(inst.endpoint, inst.dph - inst.storageDph);
    await this.manage(inst, 'running');
    inst.wantRunning = true;
    inst.announced = false;
    inst.bootAt = Date.now();
    this.log.info({ event: 'vast_instance', op: 'start', instance: id }, 'Vast instance start requested');
    this.ensurePolling();
  }

  async stop(id: number): Promise<void> {
    const inst = this.insts.get(id);
    if (!inst) throw new Error(`no Vast instance ${id}`);
    if (inst.dry) return this.dry(`PUT /api/v0/instances/${id}/`, { state: 'stopped' });
    await this.manage(inst, 'stopped');
    inst.wantRunning = false;
    inst.announced = false;
    this.log.info({ event: 'vast_instance', op: 'stop', instance: id }, 'Vast instance stopped (its disk stays billed)');
    this.emit({ workerId: id, kind: 'stopped', reason: 'instance stopped' });
  }

  async destroy(id: number): Promise<void> {
    const inst = this.insts.get(id);
    if (inst?.dry) {
      this.insts.delete(id);
      return this.dry(`DELETE /api/v0/instances/${id}/`, undefined);
    }
    const pending = this.pendingCreates.get(id);
    if (!inst && pending) {
      pending.cancelled = true; // destroyed as soon as the create answers
      return;
    }
    if (!inst && !this.toDestroy.has(id)) return; // never ours (or already gone): nothing to touch
    if (inst?.wantRunning && !inst.callFailed && inst.machineId) {
      // Parked workers are released for cost; one released while it should run is one whose worker
      // failed (errored, never loaded, stopped answering): its machine is avoided like a failed one.
      this.avoided.set(inst.machineId, Date.now() + this.cfg.avoid_machine_seconds * 1000);
      this.log.info({ event: 'vast_avoid', machine: inst.machineId, instance: id }, 'worker released while running: avoiding its machine');
    }
    try {
      await this.destroyNow(id);
    } catch (err) {
      // Kept and retried at each poll: an instance is never left behind.
      this.toDestroy.add(id);
      this.ensurePolling();
      throw err;
    }
    this.emit({ workerId: id, kind: 'destroyed' });
  }

  private async manage(inst: Inst, state: 'running' | 'stopped'): Promise<void> {
    try {
      await this.api.call('manage', 'PUT', `/instances/${inst.id}/`, { state }, { idempotent: true });
    } catch (err) {
      inst.callFailed = true;
      throw err;
    }
  }

  private async destroyNow(id: number): Promise<void> {
    try {
      await this.api.call('destroy', 'DELETE', `/instances/${id}/`, undefined, { idempotent: true });
    } catch (err) {
      if (!(err instanceof VastApiError && (err.status === 404 || err.status === 410))) throw err;
    }
    this.ledger.append({ op: 'destroyed', id, at: Date.now() });
    this.released.add(id);
    if (this.released.size > 1000) this.released.delete(this.released.values().next().value!);
    this.insts.delete(id);
    this.toDestroy.delete(id);
    this.log.info({ event: 'vast_instance', op: 'destroyed', instance: id }, 'Vast instance destroyed');
  }

  private dry(call: string, body: unknown): void {
    this.log.info({ event: 'vast_dry_run', call, body }, 'dry run: call not made');
  }

  // ------------------------------------------------------------------ adopt / reconcile

  async adopt(specs: AdoptSpec[]): Promise<AdoptResult[]> {
    this.adopted = true;
    if (this.cfg.dry_run) {
      this.dry('GET /api/v0/instances?owner=me', undefined);
      return [];
    }
    const listed = await this.list();
    const ours = listed.filter((i) => typeof i.label === 'string' && i.label.startsWith(this.labelPrefix));
    const byId = new Map(ours.map((i) => [i.id, i]));
    const out: AdoptResult[] = [];
    const kept = new Set<number>();
    for (const s of specs) {
      const vi = byId.get(s.workerId);
      if (!vi || DEAD.has(vi.actual_status ?? '')) continue;
      const inst = this.blankInst(vi.id, vi.label ?? '', s);
      inst.machineId = vi.machine_id ?? 0;
      inst.dph = vi.dph_total ?? s.dollarsPerHour;
      inst.storageDph = ((vi.storage_cost ?? 0) * (vi.disk_space ?? 0)) / 720 || s.storageDollarsPerHour;
      inst.status = vi.actual_status ?? null;
      const url = this.urlOf(vi);
      const runs = vi.actual_status === 'running' || vi.actual_status === 'loading' || vi.actual_status === null || vi.actual_status === undefined;
      // Parked on purpose (the intended status is the user's target): the engine's park went
      // through and the autoscaler was killed before it journaled it. Kept as a standby, not
      // waited for (it would time out and be replaced) nor started behind the engine's back.
      const parked = s.running && vi.intended_status === 'stopped';
      inst.wantRunning = s.running && !parked;
      if (s.running && runs && url && !parked) {
        inst.url = url;
        inst.announced = true;
      }
      if (!s.running && vi.intended_status === 'running') {
        // The engine had parked it: a running one would bill the GPU.
        await this.api.call('manage', 'PUT', `/instances/${vi.id}/`, { state: 'stopped' }, { idempotent: true }).catch(() => undefined);
      }
      this.insts.set(vi.id, inst);
      kept.add(vi.id);
      if (parked) {
        out.push({ id: vi.id, running: false, stopped: true });
        continue;
      }
      out.push({ id: vi.id, running: s.running ? runs || vi.intended_status === 'running' : false, ...(inst.url ? { url: inst.url } : {}) });
    }
    // Everything else labelled for this engine is nobody's: destroyed, never leaked.
    const orphans = ours.filter((i) => !kept.has(i.id));
    for (const o of orphans) {
      this.log.warn(
        { event: 'vast_reconcile', instance: o.id, label: o.label, status: o.actual_status },
        'a labelled instance the engine does not remember: destroying it',
      );
      await this.destroyNow(o.id).catch(() => this.toDestroy.add(o.id));
    }
    // Creates journaled without an outcome: an instance with their label was dealt with above.
    const found = new Set(ours.map((i) => i.label));
    for (const [label] of this.ledger.open())
      this.ledger.append({
        op: 'failed',
        label,
        at: Date.now(),
        reason: found.has(label) ? 'found at start: reconciled' : 'no instance at start: never created',
      });
    // Every create is settled now: the journal starts afresh (it would otherwise grow forever).
    if (this.pendingCreates.size === 0 && this.creating.size === 0) this.ledger.reset();
    this.log.info(
      { event: 'vast_adopted', adopted: [...kept], destroyed: orphans.map((o) => o.id), others_untouched: listed.length - ours.length },
      'Vast instances reconciled',
    );
    this.ensurePolling();
    return out;
  }

  // ------------------------------------------------------------------ poll

  private ensurePolling(): void {
    if (this.pollTimer || this.closed) return;
    this.pollTimer = setInterval(() => void this.poll(), this.cfg.poll_seconds * 1000);
    this.pollTimer.unref();
  }

  /** One look at the account's instances (public for tests: a poll now). */
  async poll(): Promise<void> {
    if (this.polling || this.closed || this.cfg.dry_run) return;
    this.polling = true;
    try {
      for (const id of [...this.toDestroy]) await this.destroyNow(id).catch(() => undefined);
      const listed = await this.list();
      const byId = new Map(listed.map((i) => [i.id, i]));
      const now = Date.now();
      for (const inst of [...this.insts.values()]) {
        if (inst.dry) continue;
        const vi = byId.get(inst.id);
        if (!vi) {
          this.insts.delete(inst.id);
          this.emit({ workerId: inst.id, kind: 'exited', reason: 'instance no longer listed by Vast' });
          continue;
        }
        inst.status = vi.actual_status ?? null;
        const msg = vi.status_msg ?? '';
        // Dead even while parked: it could never start again (Vast: destroy and re-rent).
        if (DEAD.has(inst.status ?? '') || /\bError\b/.test(msg)) {
          await this.fail(inst, `${inst.status ?? 'failed'}${msg ? `: ${msg}` : ''}`);
          continue;
        }
        if (!inst.wantRunning) continue;
        const url = this.urlOf(vi);
        if (inst.status === 'running' && url) {
          if (!inst.announced || inst.url !== url) {
            inst.announced = true;
            inst.url = url;
            this.emit({ workerId: inst.id, kind: 'running', reason: 'instance running', url });
          }
          continue;
        }
        const limit =
          (inst.status === null || inst.status === 'loading' || inst.status === 'created' ? this.cfg.boot_timeout_seconds : this.cfg.start_timeout_seconds) *
          1000;
        if (!inst.announced && now - inst.bootAt > limit)
          await this.fail(inst, `instance still ${inst.status ?? 'provisioning'} after ${Math.round(limit / 1000)} s`);
      }
      // Labelled for this engine, not ours, not being created: left by a lost answer. Destroyed.
      if (this.adopted) {
        for (const vi of listed) {
          if (typeof vi.label !== 'string' || !vi.label.startsWith(this.labelPrefix)) continue;
          if (this.insts.has(vi.id) || this.creating.has(vi.label) || this.released.has(vi.id)) continue;
          this.log.warn({ event: 'vast_reconcile', instance: vi.id, label: vi.label }, 'a labelled instance nobody owns: destroying it');
          await this.destroyNow(vi.id).catch(() => this.toDestroy.add(vi.id));
        }
      }
    } catch (err) {
      this.log.warn({ event: 'vast_poll', error: err instanceof Error ? err.message : String(err) }, 'Vast instance poll failed');
    } finally {
      this.polling = false;
    }
  }

  /** A machine-side failure: destroy the instance, avoid its machine, tell the engine. */
  private async fail(inst: Inst, reason: string): Promise<void> {
    if (inst.machineId) this.avoided.set(inst.machineId, Date.now() + this.cfg.avoid_machine_seconds * 1000);
    this.log.warn(
      { event: 'vast_instance', op: 'failed', instance: inst.id, machine: inst.machineId, reason },
      'Vast instance failed: releasing it and avoiding its machine',
    );
    this.insts.delete(inst.id);
    await this.destroyNow(inst.id).catch(() => this.toDestroy.add(inst.id));
    this.emit({ workerId: inst.id, kind: 'exited', reason });
  }

  /** `http://public_ipaddr:HostPort` of the worker port, or undefined while it is not mapped. */
  urlOf(vi: VastInstance): string | undefined {
    const host = vi.public_ipaddr?.trim();
    const port = vi.ports?.[`${this.cfg.worker_port}/tcp`]?.[0]?.HostPort;
    if (!host || !port || !/^\d+$/.test(String(port))) return undefined;
    return `http://${host.includes(':') ? `[${host}]` : host}:${Number(port)}`;
  }

  async close(): Promise<void> {
    // Instances outlive the autoscaler on purpose (they are adopted at the next start); only the poll stops.
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
  }
}

/** This engine's id, generated once into the data dir (labels must survive restarts). */
function engineIdOf(dir: string): string {
  const path = join(dir, 'engine_id');
  if (existsSync(path)) {
    const id = readFileSync(path, 'utf8').trim();
    if (/^[A-Za-z0-9-]{1,32}$/.test(id)) return id;
  }
  const id = randomBytes(4).toString('hex');
  writeFileSync(path, `${id}\n`, { mode: 0o600 });
  return id;
}

/** A create body fit for a log line: secret env values and the registry login hidden. */
function safeBody(body: Record<string, unknown>): Record<string, unknown> {
  const env = Object.fromEntries(Object.entries((body.env as Record<string, string>) ?? {}).map(([k, v]) => [k, SECRET_ENV.test(k) ? '<redacted>' : v]));
  return { ...body, env, ...(body.image_login ? { image_login: '<redacted>' } : {}) };
}

const round = (x: number) => Math.round(x * 1000) / 1000;

/** The registry's factory for `kind: vast`. */
export function vastProviderFactory(ctx: ProviderContext): VastProvider {
  const cfg = parseProviderSection(vastConfigSchema, ctx.config, 'vast');
  let apiKey = '';
  if (cfg.api_key_file) {
    try {
      apiKey = readFileSync(cfg.api_key_file, 'utf8').trim();
    } catch (err) {
      throw new Error(`provider.api_key_file: cannot read ${cfg.api_key_file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  } else {
    apiKey = process.env.VAST_API_KEY?.trim() ?? '';
  }
  if (!apiKey && !cfg.dry_run) throw new Error('provider.api_key_file: no Vast API key (set VAST_API_KEY or api_key_file)');
  return new VastProvider({ config: cfg, dataDir: ctx.dataDir, logger: ctx.logger, apiKey });
}
