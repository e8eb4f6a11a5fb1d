// The seed's "Custom Device Selection" example. This runtime is honest about its devices:
// asking for a GPU that is not there raises a Device error, and the example falls back to the CPU.
// Run: npx node examples/custom-device.ts MODEL.gguf
import { BitNetError, BitNetModel, Device, ModelConfig } from 'bitnet-edge';

const path = process.argv[2] ?? process.env.BITNET_MODEL;
if (!path) throw new Error('usage: custom-device.ts MODEL.gguf');

console.log(`available devices: ${Device.availableDevices().map(String).join(', ')}`);
let model: BitNetModel;
try {
  model = await BitNetModel.fromFile(path, new ModelConfig({ device: Device.Cuda(0) }));
} catch (e) {
  if (!(e instanceof BitNetError) || e.kind !== 'Device') throw e;
  console.log(`cuda:0 unavailable (${e.code}); using the CPU`);
  model = await BitNetModel.fromFile(path, new ModelConfig({ device: Device.Cpu }));
}
const output = await model.generate('Hello', { maxNewTokens: 16, seed: 1 });
console.log(output);
console.log(`ran on: ${model.config().device}`);
