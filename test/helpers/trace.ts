import { fileURLToPath } from 'node:url';

/** The one-hour Azure LLM code trace shipped in `data/` (CC-BY 4.0; attribution in data/README.md). */
export const CODE_TRACE = fileURLToPath(new URL('../../data/azure-llm-2023-code.csv', import.meta.url));
