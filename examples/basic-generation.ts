// The seed's "Basic Text Generation" example in TypeScript.
// Run: npx node examples/basic-generation.ts path/to/model.gguf   (or BITNET_MODEL=...)
import { BitNetModel, GenerationConfig } from 'bitnet-edge';

const path = process.argv[2] ?? process.env.BITNET_MODEL;
if (!path) throw new Error('usage: basic-generation.ts MODEL.gguf');

const model = await BitNetModel.fromFile(path);
const config = new GenerationConfig({ maxNewTokens: 50, temperature: 0.8, seed: 42 });
const output = await model.generate('The future of AI is', config);
console.log(`Generated: ${output}`);
const m = model.lastMetrics();
console.log(`${m?.generatedTokens} tokens at ${m?.tokensPerSecond.toFixed(1)} tok/s`);
