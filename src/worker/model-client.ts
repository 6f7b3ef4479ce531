/** The model client lives with the rest of the worker's own HTTP/1.1 code (./http1/). */
export { ModelClient, BadAnswerError, type ModelClientOptions } from './http1/model-client.js';
