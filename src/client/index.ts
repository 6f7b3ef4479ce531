/**
 * nodeworker's client (`import { Serverless } from 'nodeworker/client'`): routes requests through
 * the autoscaler to workers, polls while they queue, retries with back-off, streams answers and
 * holds sessions. See docs/client.md.
 */
export { Serverless, Endpoint } from './serverless.js';
export type { ServerlessOptions, RequestOptions, SessionOptions, EndpointWorker } from './serverless.js';
export { ServerlessSession } from './session.js';
export type { SessionInit, SessionInfo, SessionRequestOptions } from './session.js';
export { ServerlessStream, SseDecoder, LineSplitter, streamFormat } from './stream.js';
export type { StreamEvent, SseEvent, JsonLine, RawChunk, StreamFormat } from './stream.js';
export type { ServerlessResponse, RetryInfo, RouteAnswer } from './transport.js';
export { backoffDelay, isRetryableStatus, DEFAULT_RETRY } from './retry.js';
export type { RetryOptions } from './retry.js';
export {
  ServerlessError,
  RouteError,
  QueueTimeoutError,
  WorkerError,
  RetriesExhaustedError,
  RequestTimeoutError,
  RequestAbortedError,
  SessionClosedError,
  StreamInterruptedError,
} from './errors.js';
export type { ServerlessErrorCode, AttemptFailure } from './errors.js';
