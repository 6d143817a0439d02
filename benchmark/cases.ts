// What the README table measures: its cases (shapes), columns and modes, and how a result
// file's case titles map back to shapes.
import type { RingImpl } from '../api/types.js';
import type { VarlenColumn } from './bench_varlen_rank.js';
import { PYTHON_CU_SEQLENS_SETS } from './bench_varlen_rank.js';

export type Mode = 'fwd' | 'fwdbwd';
export const MODES: readonly Mode[] = ['fwd', 'fwdbwd'];

/**
 * Query-key pairs a causal mask keeps over `S` tokens, each query seeing at most `left` keys
 * before it (-1: all, counted as S²/2 as the FLOP convention does).
 */
export function causalPairs(S: number, left: number): number {
  if (left < 0) return (S * S) / 2;
  const m = Math.min(S, left + 1);
  return (m * (m + 1)) / 2 + Math.max(0, S - left - 1) * (left + 1);
}

/** The dense shapes that have counterparts in the Python project's measurements. */
export type Shape = 'qkvpacked' | 'llama3';

export interface DenseCase {
  title: string;
  packing: 'qkvpacked' | 'kvpacked';
  b: number;
  s: number;
  h: number;
  hk: number;
  d: number;
}

/** The label of the single-GPU column; the percentages are of it. */
export const THEORETIC = 'theoretic flash_attn';

/**
 * A dense column: the function `${prefix}_<packing>_func${suffix}`. The Ulysses columns carry
 * their grid: `ulysses` is the pure head-parallel one (ulysses = world), a `ringImpl` column is
 * usp_attn with that ring variant on the table's Ulysses × ring grid (bench_flags.ts --ulysses).
 */
export interface Column {
  readonly label: string;
  readonly prefix: string;
  readonly suffix: string;
  readonly usp?: { readonly ringImpl: RingImpl | null };
}

export const COLUMNS: readonly Column[] = [
  { label: THEORETIC, prefix: 'flash_attn', suffix: '' },
  { label: 'ring_attn', prefix: 'ring_flash_attn', suffix: '' },
  { label: 'ring_attn_v2', prefix: 'ring_flash_attn', suffix: '_v2' },
  { label: 'zigzag_ring', prefix: 'zigzag_ring_flash_attn', suffix: '' },
  { label: 'stripe_attn', prefix: 'stripe_flash_attn', suffix: '' },
  { label: 'ulysses', prefix: 'ulysses_attn', suffix: '', usp: { ringImpl: null } },
  { label: 'usp_zigzag', prefix: 'usp_attn', suffix: '', usp: { ringImpl: 'zigzag' } },
  { label: 'usp_ring', prefix: 'usp_attn', suffix: '', usp: { ringImpl: 'ring' } },
  { label: 'usp_stripe', prefix: 'usp_attn', suffix: '', usp: { ringImpl: 'stripe' } },
];

/** Every column --columns can name. */
export const RING_COLUMNS = COLUMNS.slice(1).map((c) => c.label);
/** The columns of the Python project's table, timed when --columns is not given; the Ulysses ones are asked for by name. */
export const DEFAULT_COLUMNS = COLUMNS.filter((c) => !c.usp).map((c) => c.label);

/**
 * The Ulysses degree of a Ulysses column for `world` ranks and a case's heads, or why the column
 * cannot run: `ulysses` is the whole world; a usp column takes `asked` (--ulysses), else the
 * largest proper divisor of the world that divides both head counts (a ring of at least two).
 */
export function ulyssesDegree(
  col: Column,
  world: number,
  h: number,
  hk: number,
  asked: number | null,
): { ulysses: number; ring: number } | { skip: string } {
  if (!col.usp) throw new Error(`${col.label} is not a Ulysses column`);
  const fits = (u: number) => h % u === 0 && hk % u === 0;
  let u: number;
  if (col.usp.ringImpl === null) u = world;
  else if (asked !== null) u = asked;
  else {
    u = 1;
    for (let d = 1; d < world; d++) if (world % d === 0 && fits(d)) u = d;
  }
  if (!fits(u)) return { skip: `ulysses ${u} does not divide the heads (h=${h}, h_k=${hk})` };
  return { ulysses: u, ring: world / u };
}

export const VARLEN_COLUMNS: readonly { label: string; column: VarlenColumn }[] = [
  { label: 'theoretic flash_attn_varlen', column: 'flash_attn_varlen' },
  { label: 'ring_varlen', column: 'ring_varlen' },
  { label: 'zigzag_ring_varlen', column: 'zigzag_ring_varlen' },
  { label: 'llama3_varlen', column: 'llama3' },
  { label: 'zigzag_llama3_varlen', column: 'zigzag_llama3' },
];

const PYTHON_SHAPE_TITLE = 'Python-project qkvpacked';

/** The dense cases: on GPUs the Python project's benchmark shape and llama3-8B's; on the CPU one small one. */
export function denseCases(onGpu: boolean, tokens: number): DenseCase[] {
  return onGpu
    ? [
        {
          title: `${PYTHON_SHAPE_TITLE} (h=5, d=128)`,
          packing: 'qkvpacked',
          b: 1,
          s: tokens,
          h: 5,
          hk: 5,
          d: 128,
        },
        {
          title: 'llama3-8B kvpacked (h=32, h_k=8, d=128)',
          packing: 'kvpacked',
          b: 1,
          s: tokens,
          h: 32,
          hk: 8,
          d: 128,
        },
      ]
    : [
        {
          title: 'CPU backend, small (h=2, d=32)',
          packing: 'qkvpacked',
          b: 1,
          s: tokens,
          h: 2,
          hk: 2,
          d: 32,
        },
      ];
}

/**
 * The Python project's varlen benchmark: llama3-8B heads, 8192 tokens per rank, its four
 * cu_seqlens sets in turn, heads_k_stride 4 for llama3. On the CPU backend: small even sets.
 */
export function varlenCase(onGpu: boolean) {
  return onGpu
    ? {
        title: 'varlen llama3-8B kvpacked (h=32, h_k=8, d=128, cu_seqlens ×4)',
        s: 8192,
        h: 32,
        hk: 8,
        d: 128,
        headsKStride: 4,
        sets: PYTHON_CU_SEQLENS_SETS,
      }
    : {
        title: 'varlen CPU backend, small (h=2, d=32)',
        s: 128,
        h: 2,
        hk: 2,
        d: 32,
        headsKStride: 1,
        sets: smallVarlenSets(128),
      };
}

/**
 * The Python project's kind of cu_seqlens sets at `s` tokens per rank (a multiple of 16): one
 * sequence; a short one between two long; two halves; uneven ones down to a sixteenth.
 */
export function smallVarlenSets(s: number): number[][] {
  return [[16], [4, 12, 16], [8, 16], [6, 10, 14, 15, 16]].map((set) => [0, ...set.map((x) => (x * s) / 16)]);
}

/** The shape of a case title, or null for the cases without a Python counterpart (varlen, CPU). */
export function shapeOf(title: string): Shape | null {
  if (title.startsWith(PYTHON_SHAPE_TITLE)) return 'qkvpacked';
  if (title.startsWith('llama3-8B kvpacked')) return 'llama3';
  return null;
}

/** A chart group's title: the case without its parenthesis, then the mode. */
export function groupTitle(caseTitle: string, mode: string): string {
  return `${caseTitle.split(' (')[0]} ${mode}`;
}
