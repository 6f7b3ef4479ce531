import { createHash, timingSafeEqual } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Hono } from 'hono';
import type { Logger } from '../common/log.js';
import type { WorkerExtension } from './worker.js';

/**
 * Management routes (PROTOCOL §7). `POST /pyworker/update` with `Authorization: Bearer
 * <MASTER_TOKEN>` writes the force-update marker file that the instance's supervisor watches, and
 * answers 200 `{ok: true}`. A missing or wrong token gets 401 JSON; the token is compared in
 * constant time and never logged. An empty MASTER_TOKEN authorises nobody.
 */
export interface ManagementOptions {
  masterToken: string;
  /** The marker file (env FORCE_UPDATE_FILE, default /.force_update). */
  forceUpdateFile: string;
  logger: Logger;
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** True when `presented` equals `expected`; time does not depend on where they differ. */
export function tokenMatches(expected: string, presented: string | undefined | null): boolean {
  if (!expected || typeof presented !== 'string') return false;
  // Digests have equal length whatever the inputs, which timingSafeEqual needs.
  return timingSafeEqual(sha256(expected), sha256(presented));
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer[ \t]+(.+)$/i.exec(header.trim());
  return m ? m[1]!.trim() : null;
}

export function addManagementRoutes(app: Hono, o: ManagementOptions): void {
  app.post('/pyworker/update', async (c) => {
    const token = bearerToken(c.req.header('authorization'));
    if (token === null) {
      o.logger.warn({ path: '/pyworker/update' }, 'update refused: no bearer token');
      return c.json({ error: 'missing Authorization: Bearer <MASTER_TOKEN>', field: 'authorization' }, 401);
    }
    if (!tokenMatches(o.masterToken, token)) {
      o.logger.warn({ path: '/pyworker/update' }, 'update refused: wrong token');
      return c.json({ error: 'wrong token', field: 'authorization' }, 401);
    }
    try {
      await mkdir(dirname(o.forceUpdateFile), { recursive: true });
      await writeFile(o.forceUpdateFile, `${new Date().toISOString()}\n`);
    } catch (err) {
      o.logger.error({ file: o.forceUpdateFile, err: (err as Error).message }, 'could not write the force-update marker');
      return c.json({ error: `could not write ${o.forceUpdateFile}: ${(err as Error).message}` }, 500);
    }
    o.logger.info({ file: o.forceUpdateFile }, 'force update requested: marker written');
    return c.json({ ok: true }, 200);
  });
}

/** Management as a worker extension (token and marker path from the worker's environment). */
export function managementExtension(): WorkerExtension {
  return {
    name: 'management',
    setup(ctx) {
      addManagementRoutes(ctx.app, { masterToken: ctx.config.report.masterToken, forceUpdateFile: ctx.config.forceUpdateFile, logger: ctx.logger });
      return {};
    },
  };
}
