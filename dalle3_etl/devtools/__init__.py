"""Developer tools: `synth` (synthetic DALLE-3-style corpora with a known truth) and `bench` (the benchmark harness)."""
