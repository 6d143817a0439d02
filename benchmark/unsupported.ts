// Which failures of a benchmark cell are the backend refusing an option (E_UNSUPPORTED), which
// the tables show in the cell, rather than a fault that ends the run.
import { RingFlashAttnError } from '../runtime/errors.js';

/**
 * The refusal's message when `e` is E_UNSUPPORTED, or a rank failure (E_WORKER) caused by one;
 * else null.
 */
export function unsupportedBy(e: unknown): string | null {
  for (let x: unknown = e; x instanceof RingFlashAttnError; x = x.cause)
    if (x.code === 'E_UNSUPPORTED') return x.message;
  return null;
}
