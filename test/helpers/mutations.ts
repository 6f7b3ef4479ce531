/**
 * Seeded byte mutations of raw HTTP requests, for differential tests of two HTTP readers (the fast
 * lane and node:http): the same mutated bytes go to both, and their answers are compared.
 */

/** Bytes that break parsers: the separators and the characters llhttp refuses or treats specially. */
const SPICY = [
  0x0d, 0x0a, 0x00, 0x09, 0x20, 0x3a, 0x2c, 0x3b, 0x7f, 0xff, 0x80, 0x30, 0x39, 0x2d, 0x2b, 0x22, 0x7b, 0x7d, 0x61, 0x5a, 0x2f, 0x3f, 0x23, 0x01, 0x0b, 0x0c,
];

/** 1 to 3 seeded edits of `base`, mostly in its head (the part the two paths parse differently). */
export function mutate(base: Buffer, rnd: () => number): Buffer {
  let buf = Buffer.from(base);
  const edits = 1 + Math.floor(rnd() * 3);
  for (let e = 0; e < edits; e++) {
    const headEnd = Math.max(1, buf.indexOf('\r\n\r\n') + 4);
    const at = rnd() < 0.85 ? Math.floor(rnd() * headEnd) : Math.floor(rnd() * buf.length);
    const byte = rnd() < 0.7 ? SPICY[Math.floor(rnd() * SPICY.length)]! : Math.floor(rnd() * 256);
    const op = rnd();
    if (op < 0.4) buf[at] = byte;
    else if (op < 0.6) buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1)]);
    else if (op < 0.85) buf = Buffer.concat([buf.subarray(0, at), Buffer.from([byte]), buf.subarray(at)]);
    else {
      // Repeat a whole line of the head (duplicate headers, doubled request lines).
      const start = buf.lastIndexOf('\n', at) + 1;
      const end = buf.indexOf('\n', at);
      if (end > start) buf = Buffer.concat([buf.subarray(0, end + 1), buf.subarray(start, end + 1), buf.subarray(end + 1)]);
    }
  }
  return buf;
}

/** The project's answer to a request node:http cannot parse (`clientErrorText`), as `status body`. */
export const MALFORMED_400 = /^400 \{"error":"malformed HTTP request \(HPE_[A-Z_]+\)","field":"request"\}$/;

/**
 * A difference that is right: garbage right after an answer that closed the connection gets
 * node:http's 400 only while the socket is still writable, which depends on timing; the answers
 * before agree. `a` and `b` are each reader's answers as `status body`.
 */
export function garbageAfterClose(a: string[], b: string[]): boolean {
  const [longer, shorter] = a.length > b.length ? [a, b] : [b, a];
  return shorter.length >= 1 && longer.length === shorter.length + 1 && MALFORMED_400.test(longer.at(-1)!) && shorter.every((v, k) => v === longer[k]);
}
