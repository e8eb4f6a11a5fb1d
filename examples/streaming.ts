// The seed's "Streaming Generation" example: generateStream is a ReadableStream<string> that is
// also async-iterable. Run: npx node examples/streaming.ts MODEL.gguf
import { BitNetModel, GenerationConfig } from 'bitnet-edge';

const path = process.argv[2] ?? process.env.BITNET_MODEL;
if (!path) throw new Error('usage: streaming.ts MODEL.gguf');

const model = await BitNetModel.fromFile(path);
const config = new GenerationConfig({ maxNewTokens: 40, seed: 7 });
let streamed = '';
try {
  for await (const token of model.generateStream('Tell me about Rust:', config)) {
    process.stdout.write(token);
    streamed += token;
  }
} catch (e) {
  console.error(`Error: ${e}`);
}
process.stdout.write('\n');
// The same seed gives the same text without streaming.
const whole = await model.generate('Tell me about Rust:', config);
console.log(`stream equals generate: ${streamed === whole}`);
