// The CUDA math constants the kernels use, for the CPU simulation (see cuda_runtime.h here).
#pragma once
#include <math.h>
#define CUDART_INF_F HUGE_VALF
#define CUDART_INF HUGE_VAL
