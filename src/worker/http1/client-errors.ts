import type { Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { clientErrorText } from './fast-lane.js';

/**
 * node:http's answer to a request it cannot parse, made the project's: a JSON 400/408/431 naming
 * what was wrong (node's own is a bare `400 Bad Request`), written after the answers to the
 * requests before it on the connection (node's overtakes them and its close loses them), as the
 * fast lane orders them. Used by the worker's and the engine's listeners.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex & { _httpMessage?: ServerResponse | null }) => {
    const inFlight = socket._httpMessage;
    // The error is about the request being answered (its body stalled, its chunk framing or
    // trailer is malformed, it was cut): that request will never complete, so its answer never
    // comes; waiting for it held the connection forever (issue 21 row 9). Answer now, as node:http
    // does without a clientError listener: the error when nothing of the answer is out yet, else cut.
    if (inFlight?.req && !inFlight.req.complete) return abortIncomplete(socket, inFlight, err.code);
    // Garbage pipelined behind requests: their answers go out first, then the 400 (in order, as
    // the fast lane does), instead of the 400 overtaking them and the close losing them. Node
    // answers pipelined requests one at a time (the next is attached once the one before has
    // emitted 'finish', which may still be due in this tick although all its bytes are out), so
    // wait until the connection has no answer left unwritten.
    let last = inFlight ?? null;
    let answered = false;
    const settle = () => {
      if (answered) return;
      const m = socket._httpMessage ?? null;
      if (m && !socket.destroyed && (!m.writableFinished || m !== last)) {
        last = m;
        let woken = false;
        const after = () => {
          if (woken) return;
          woken = true;
          setImmediate(settle);
        };
        if (m.writableFinished) setImmediate(after);
        else {
          m.once('finish', after);
          m.once('close', after);
        }
        return;
      }
      answered = true;
      // An answer that closes the connection is the last one on it: nothing may follow it.
      if (last && (!last.shouldKeepAlive || (last as { _last?: boolean })._last)) return void socket.end();
      if (!socket.writable) return void socket.destroy();
      socket.end(clientErrorText(err.code));
    };
    if (inFlight) setImmediate(settle);
    else settle();
  });
}

/**
 * End a connection whose current request cannot complete: its error answer (408/400/413...) when
 * none of the request's own answer is out yet, then close (destroyed a second later if the client
 * does not read). The request's handler sees the request abort and ends it in the ledger.
 */
function abortIncomplete(socket: Duplex, res: ServerResponse, code: string | undefined): void {
  if (socket.writable && !res.headersSent) {
    socket.end(clientErrorText(code));
    setTimeout(() => socket.destroy(), 1000).unref();
  } else socket.destroy();
}
