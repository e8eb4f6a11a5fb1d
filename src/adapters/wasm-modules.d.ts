// Wasm files imported as modules (Workers: wrangler's CompiledWasm rule, esbuild's copy loader).
declare module '*.wasm' {
  const module: WebAssembly.Module;
  export default module;
}
