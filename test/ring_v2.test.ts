import { ringCases } from './ring_cases.js';

ringCases('ring_flash_attn v2 (pass-along ring)', {
  func: 'ring_flash_attn_func_v2',
  kvpacked: 'ring_flash_attn_kvpacked_func_v2',
  qkvpacked: 'ring_flash_attn_qkvpacked_func_v2',
});
