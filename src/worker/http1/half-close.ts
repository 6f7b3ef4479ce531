import type { Socket } from 'node:net';

/**
 * A client that half-closes (sends its whole request, then shutdown(SHUT_WR)) and a client that
 * went away (close()) look the same to the server: a FIN. The first still reads, and must get its
 * answer; for the second the model's work should stop. So on a FIN while a request waits for its
 * answer, the worker probes: it writes an interim `100 Continue` (every HTTP/1.1 client must accept
 * unasked 1xx answers, RFC 9110 §15.2), at once and then every PROBE_MS. A client that is gone
 * answers the first with a reset, and the next write fails: the connection closes and the request
 * ends as cancelled. A client that is there skips the 1xx and reads the answer. Probing stops once
 * the answer has started (its own writes then tell the same).
 */
export const CONTINUE_PROBE = 'HTTP/1.1 100 Continue\r\n\r\n';
/**
 * When the probes after the first go out: the reset to the first is back within a round trip
 * (microseconds on loopback, up to a few hundred ms across the world), so the next ones come soon
 * and then spread out to one a second.
 */
const REPROBE_MS = [5, 50, 250];
export const PROBE_MS = 1000;

/**
 * Probe `socket` while `waiting()` holds (an answer is due and none of it is written yet).
 * `write` writes one probe (defaults to the raw interim answer on the socket).
 */
export function probeHalfClosed(socket: Socket, waiting: () => boolean, write: () => void = () => void socket.write(CONTINUE_PROBE)): void {
  const tick = (n: number) => {
    if (socket.destroyed || !socket.writable || !waiting()) return;
    write();
    setTimeout(() => tick(n + 1), REPROBE_MS[n] ?? PROBE_MS).unref();
  };
  tick(0);
}
