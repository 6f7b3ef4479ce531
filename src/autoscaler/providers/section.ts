import type { z } from 'zod';
import { fieldErrors } from '../params.js';

/**
 * A provider's config section checked by its schema: the parsed section, or an error listing every
 * bad field (`provider.<field>: <problem>`), which stops start-up before anything is created.
 */
export function parseProviderSection<S extends z.ZodTypeAny>(schema: S, section: Record<string, unknown>, kind: string): z.output<S> {
  const parsed = schema.safeParse({ ...section, kind });
  if (parsed.success) return parsed.data;
  const fields = fieldErrors(parsed.error, 'provider');
  throw new Error(
    `provider config is invalid:\n${Object.entries(fields)
      .map(([k, v]) => `  ${k}: ${v}`)
      .join('\n')}`,
  );
}
