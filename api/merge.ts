import type { Backend } from '../runtime/backend.js';
import type { DeviceTensor } from '../runtime/tensor.js';

/**
 * update_out_and_lse: merges a block's (out, lse) into the running ones, in fp32, exactly:
 *   lse = lse_a - logsigmoid(lse_a - lse_b),  out = out_a - sigmoid(lse_b - lse_a) * (out_a - out_b).
 * Rows where a side has lse = -inf (no key seen yet) take the other side unchanged.
 * `out`/`blockOut` are (b, s, h, d) fp32 views, `lse`/`blockLse` (b, h, s) fp32 views.
 */
export function updateOutAndLse(backend: Backend, out: DeviceTensor, lse: DeviceTensor, blockOut: DeviceTensor, blockLse: DeviceTensor): void {
  backend.merge(out, lse, blockOut, blockLse);
}

