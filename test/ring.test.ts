import { ringCases } from './ring_cases.js';

ringCases('ring_flash_attn (direct ring)', {
  func: 'ring_flash_attn_func',
  kvpacked: 'ring_flash_attn_kvpacked_func',
  qkvpacked: 'ring_flash_attn_qkvpacked_func',
});
