import type { Socket } from 'node:net';

/**
 * Lingering close, as nginx does it (`lingering_close`): after an answer that refuses a request
 * whose body is still arriving (413), the worker sends its answer and a FIN, then keeps reading
 * (and discarding) for a while before closing. Closing at once, with the client's bytes still
 * unread, makes the kernel send a reset, and the reset throws away the 413 the client has not read
 * yet: the client saw a bare connection reset instead of an answer (issue 21 row 13).
 */

/** How long the worker keeps reading after such an answer before it closes anyway. */
export const LINGER_MS = 5000;

/**
 * Make node:http's close after the current answer (`socket.destroySoon`, called once an answer
 * with `connection: close` is written) a lingering close: end our side, discard what still comes,
 * and destroy when the client closes or after `ms`.
 */
export function lingerOnClose(socket: Socket, ms = LINGER_MS): void {
  const s = socket as Socket & { destroySoon?: () => void };
  if (typeof s.destroySoon !== 'function') return;
  s.destroySoon = () => {
    if (s.writable) s.end();
    const timer = setTimeout(() => s.destroy(), ms);
    timer.unref();
    s.once('close', () => clearTimeout(timer));
    // The bytes still coming go to node:http's parser, which drops the refused body (it was
    // resumed); nothing else to do but wait for the client's close.
  };
}
