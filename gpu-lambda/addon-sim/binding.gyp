# The Node-API addon (../addon/src/addon.cc) linked against the engine on the CPU simulation
# (../engine/sim: the kernels' own .cu sources compiled by g++, run block by block on the CPU)
# instead of CUDA. It reports a device named "bn_sim", so the cuda backend runs the real kernels
# in tests on machines without a GPU:
#   npx node-gyp rebuild --directory gpu-lambda/addon-sim --nodedir=/usr
# Output: build/Release/bitnet_cuda.node (load it with BITNET_CUDA_ADDON or the addonPath option).
{
  "targets": [
    {
      "target_name": "bitnet_cuda",
      "sources": ["../addon/src/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "../engine/include"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_ADDON_API_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "actions": [
        {
          "action_name": "engine_sim_library",
          "inputs": ["<!@(sh -c 'ls ../engine/src/* ../engine/sim/* ../engine/include/* ../engine/Makefile')"],
          "outputs": ["../engine/build/sim/libbitnet_cuda_sim.a"],
          "action": ["make", "-C", "../engine", "-j2", "sim-lib"]
        }
      ],
      "libraries": ["<(module_root_dir)/../engine/build/sim/libbitnet_cuda_sim.a", "-lpthread"]
    }
  ]
}
