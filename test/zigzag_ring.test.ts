import { ringCases } from './ring_cases.js';

ringCases(
  'zigzag_ring_flash_attn',
  {
    func: 'zigzag_ring_flash_attn_func',
    kvpacked: 'zigzag_ring_flash_attn_kvpacked_func',
    qkvpacked: 'zigzag_ring_flash_attn_qkvpacked_func',
  },
  2,
);
