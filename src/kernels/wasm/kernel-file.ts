/**
 * The type of `bitnet-edge/kernels/bitnet-relaxed.wasm` and `…/bitnet-simd.wasm` for TypeScript
 * users (package.json "exports" points their `types` here; the runtime target is the .wasm file).
 * A bundler gives the file as bytes (esbuild's binary loader) or as a compiled module (wrangler's
 * CompiledWasm rule); registerKernelModules takes either. This module itself is never loaded.
 */
const kernel = undefined as unknown as WebAssembly.Module | Uint8Array;
export default kernel;
