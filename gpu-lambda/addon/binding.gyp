# The Node-API addon over the CUDA engine's C API (node-addon-api, built with node-gyp):
#   npx node-gyp rebuild --directory gpu-lambda/addon --nodedir=/usr    (Node-API: any Node >= 18 loads it)
# The engine is a static library built by ../engine/Makefile (every .cu for sm_80 and sm_90),
# linked together with the static CUDA runtime; libcuda is opened by cudart at run time, so the
# addon loads on machines without a driver and reports that through queryDevice().
{
  "variables": {
    "cuda_home%": "<!(sh -c 'd=$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n \"s/^#\\$ TOP=//p\" | head -1); [ -n \"$d\" ] && echo $d || echo /usr/local/cuda')"
  },
  "targets": [
    {
      "target_name": "bitnet_cuda",
      "sources": ["src/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "../engine/include"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_ADDON_API_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "actions": [
        {
          "action_name": "engine_static_library",
          "inputs": ["<!@(sh -c 'ls ../engine/src/* ../engine/include/* ../engine/Makefile')"],
          "outputs": ["../engine/build/libbitnet_cuda.a"],
          "action": ["make", "-C", "../engine", "-j2", "lib"]
        }
      ],
      "libraries": [
        "<(module_root_dir)/../engine/build/libbitnet_cuda.a",
        "-L<(cuda_home)/lib64",
        "-lcudart_static",
        "-ldl",
        "-lrt",
        "-lpthread"
      ]
    }
  ]
}
