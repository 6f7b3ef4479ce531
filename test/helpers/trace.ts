import { fileURLToPath } from 'node:url';

/** The shared one-hour trace: CI clones the repo with `shared/` beside it, as in the workspace. */
export const SHARED_TRACE = fileURLToPath(new URL('../../../shared/data/azure-llm-2023-code.csv', import.meta.url));
