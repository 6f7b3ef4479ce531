/**
 * Benchmark payloads for the comfyui handler: one small text-to-image job per request, with the
 * constant workload (no `cost`), so the measured perf is "constant workloads per second". Set
 * BENCHMARK_COMFYUI_STEPS to make each job longer or shorter on a real ComfyUI.
 */
export function benchmarkSteps(): number {
  const n = Number(process.env.BENCHMARK_COMFYUI_STEPS);
  return Number.isInteger(n) && n > 0 ? n : 20;
}

export function comfyuiBenchmarkPayload(i: number) {
  return {
    input: {
      request_id: `benchmark-${i}`,
      modifier: 'Text2Image',
      modifications: { prompt: `a lighthouse on a cliff at dusk, study ${i}`, width: 512, height: 512, steps: benchmarkSteps(), seed: 1000 + i },
    },
  };
}
