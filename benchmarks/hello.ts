/** Benchmark payloads for the hello handler: greetings of 32 tokens for a rotating cast of names. */
const NAMES = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Margaret', 'Ken'];

export function helloBenchmarkPayload(i: number) {
  return { name: NAMES[i % NAMES.length]!, max_tokens: 32, stream: false };
}
