export { init_tables, set_tables } from './common';
export { selftest } from './selftest';
export { absmax, quantize_act } from './quant';
export { mm_i2s, mm_tq2, mm_tq1 } from './ternary';
export { expF32, siluF32, rmsnorm, rope_head, f16_round_vec, gate_act, add_vec } from './ops';
export { attend, kv_store } from './attention';
export { scratch_bytes, thread_scratch_bytes, run, worker_loop, stop_workers, forward, barrier } from "./forward";
export { row_bytes, dequant_row, round_act, mv_exact, row_abs_sums, head_prep_bytes, head_prep_q8_0, head_prep_q8k, head_q8_0, head_q6_k, head_fallbacks, head_f16 } from './floatdot';
export { tl_table_bytes, tl_tables, mm_tl } from './tl';
