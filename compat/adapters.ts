// ring_flash_attn.adapters (Python) patches HuggingFace transformers' flash-attention forward so
// that a model trains with llama3 context parallelism: substitute_hf_flash_attn installs the patch,
// update_ring_flash_attn_params hands it each batch's cu_seqlens. Node has no transformers to
// patch, so both names exist only to fail with a typed error that says what to call instead
// (ported code otherwise dies with "is not a function").
import { fail } from '../runtime/errors.js';

const INSTEAD =
  'call llama3_flash_attn_varlen_func from your attention layer, with the cu_seqlens, ' +
  'max_seqlen and local_k_slice that llama3_flash_attn_prepare_cu_seqlens returns for this rank';

/** Python: patches transformers' _flash_attention_forward. Not available in Node: throws E_UNSUPPORTED. */
export function substitute_hf_flash_attn(..._args: unknown[]): never {
  fail(
    'E_UNSUPPORTED',
    `substitute_hf_flash_attn patches HuggingFace transformers, which does not exist in Node; ${INSTEAD}`,
  );
}

/** Python: sets the cu_seqlens the patched transformers attention uses. Not available in Node: throws E_UNSUPPORTED. */
export function update_ring_flash_attn_params(..._args: unknown[]): never {
  fail(
    'E_UNSUPPORTED',
    `update_ring_flash_attn_params feeds the transformers patch of substitute_hf_flash_attn, which does not exist in Node; ${INSTEAD}`,
  );
}
