import { RingFlashAttnError } from './errors.js';
import type { RankInfo } from './context.js';
import type { Backend } from './backend.js';

export class CudaBackend {
  constructor(_info: RankInfo) {
    throw new RingFlashAttnError('E_UNSUPPORTED', 'the CUDA backend is not wired yet');
  }
}
export type _B = Backend;
