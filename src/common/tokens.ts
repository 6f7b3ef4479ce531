/** Rough token count of a prompt: 4 characters a token, as OpenAI's rule of thumb; token ids count one each. */
export function promptTokens(text: string | string[] | number[] | number[][]): number {
  if (Array.isArray(text) && text.length > 0 && typeof text[0] !== 'string') return (text as Array<number | number[]>).flat().length;
  const s = Array.isArray(text) ? text.join('') : text;
  return Math.ceil(s.length / 4);
}

const WORDS = 'the model answers questions about code data science history and music with short precise sentences'.split(' ');

/** Deterministic prompt text of `words` words for request `i`: benchmark payloads and demo load. */
export function benchmarkPrompt(i: number, words: number): string {
  const out: string[] = [];
  for (let k = 0; k < words; k++) out.push(WORDS[(i * 7 + k) % WORDS.length]!);
  return out.join(' ');
}
