import { ringCases } from './ring_cases.js';

ringCases('stripe_flash_attn', {
  func: 'stripe_flash_attn_func',
  kvpacked: 'stripe_flash_attn_kvpacked_func',
  qkvpacked: 'stripe_flash_attn_qkvpacked_func',
});
