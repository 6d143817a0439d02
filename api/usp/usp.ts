// usp_attn_*: unified sequence parallelism (Ulysses × ring, as in yunchang and xDiT). The group is
// a grid of ulysses × ring members (api/usp/grid.ts). An all-to-all over each Ulysses group trades
// the member's sequence piece with every head for the group's whole ring shard with 1/ulysses of
// the heads; the chosen ring variant (zigzag, ring or stripe, through its own forward and
// backward) then runs over the ring group on that shard; a second all-to-all trades out and lse
// back. Backward mirrors it: dout goes to heads, the ring's backward runs on the re-sharded
// inputs kept from the forward, and dq/dk/dv come back to sequence pieces. Ulysses needs no
// layout of its own: the global sequence is dealt over the ring ranks the ring variant's way and
// each ring shard is cut contiguously over its Ulysses members, so the gathered shard is exactly
// the ring variant's shard. window_size and softcap reach the ring as they are: its positions are
// global ones, the gathered shard being the ring variant's.
import type { Backend } from '../../runtime/backend.js';
import type { Group } from '../../runtime/comm.js';
import { fail } from '../../runtime/errors.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { ATTN_POSITIONAL, parseAttnArgs, ringOptions } from '../args.js';
import { disposeAll } from '../ring/kv_buffer.js';
import { ringVariant } from '../ring/ring.js';
import { stripeVariant } from '../ring/stripe.js';
import { zigzagVariant } from '../ring/zigzag_ring.js';
import { singleVariant } from '../single.js';
import type { RingImpl, UspArgs } from '../types.js';
import { checkQkv } from '../validate.js';
import type { RingBackwardFn, RingForward, RingOptions, RingVariant } from '../variant.js';
import { DENSE_FRAME, makeFamily, resolveGroup, type AttnFamily, type ParseArgs } from '../wrappers.js';
import { headsToSeq, lseToSeq, seqToHeads } from './all_to_all.js';
import { uspDegrees, uspGrid, type UspDegrees } from './grid.js';

export interface UspOptions extends RingOptions, UspDegrees {}

const RING_VARIANTS: Record<RingImpl, RingVariant> = {
  zigzag: zigzagVariant,
  ring: ringVariant,
  stripe: stripeVariant,
};

/** The variant that runs over the ring groups: with a ring of one, the single-device kernel. */
function ringOf(o: UspDegrees): RingVariant {
  return o.ring === 1 ? singleVariant : RING_VARIANTS[o.ringImpl];
}

/** What the forward keeps for the backward: the ring's inputs and result on the re-sharded heads. */
interface UspForward extends RingForward {
  heads?: { q: DeviceTensor; k: DeviceTensor; v: DeviceTensor; fwd: RingForward };
}

/** Head counts the Ulysses degree must divide, and the ring variant's own condition on its (gathered) shard. */
export function checkUsp(fn: string, q: DeviceTensor, k: DeviceTensor, o: UspOptions): void {
  const [, s, h] = q.shape as [number, number, number];
  const hk = k.shape[2]!;
  for (const [name, n] of [
    ['nheads', h],
    ['nheads_k', hk],
  ] as const)
    if (n % o.ulysses !== 0)
      fail(
        'E_SHAPE',
        `${fn}: ${name} (${n}) must be divisible by the Ulysses degree (${o.ulysses}): each Ulysses rank attends with ${name}/ulysses heads`,
      );
  if (o.ring > 1 && o.ringImpl === 'zigzag' && (o.ulysses * s) % 2 !== 0)
    fail(
      'E_SHAPE',
      `${fn}: ring_impl 'zigzag' needs an even ring shard, got ulysses (${o.ulysses}) × local seqlen (${s}) = ${o.ulysses * s}: each ring rank holds two equal chunks`,
    );
}

/** The ring sees this member's slice of the heads: ALiBi slopes and dropout draws go by the global head. */
function ownHeads(o: UspOptions, ulysses: Group, q: DeviceTensor): UspOptions {
  return { ...o, headOffset: ulysses.rank * (q.shape[2]! / ulysses.size) };
}

export function uspForward(
  backend: Backend,
  group: Group,
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
  o: UspOptions,
): UspForward {
  const grid = uspGrid(group, o.ulysses, o.ring);
  const ring = ringOf(o);
  if (o.ulysses === 1) return ring.forward(backend, grid.ring, q, k, v, o);
  const [qh, kh, vh] = [q, k, v].map((t) => seqToHeads(backend, grid.ulysses, t)) as [
    DeviceTensor,
    DeviceTensor,
    DeviceTensor,
  ];
  const fwd = ring.forward(backend, grid.ring, qh, kh, vh, ownHeads(o, grid.ulysses, q));
  // out travels in q's dtype: the caller would round it there anyway, and it is half the bytes.
  const outHeads = fwd.out.dtype === q.dtype ? fwd.out : backend.cast(fwd.out, q.dtype);
  const out = headsToSeq(backend, grid.ulysses, outHeads);
  if (outHeads !== fwd.out) outHeads.dispose();
  const lse = lseToSeq(backend, grid.ulysses, fwd.lse);
  const heads = { q: qh, k: kh, v: vh, fwd };
  return {
    out,
    lse,
    heads,
    release: () => {
      disposeAll(qh, kh, vh, fwd.out, fwd.lse);
      fwd.release?.();
    },
  };
}

export const uspBackward: RingBackwardFn<UspOptions> = (backend, group, dout, q, k, v, fwd, o) => {
  const grid = uspGrid(group, o.ulysses, o.ring);
  const ring = ringOf(o);
  if (o.ulysses === 1) return ring.backward(backend, grid.ring, dout, q, k, v, fwd, o);
  const h = (fwd as UspForward).heads;
  if (!h) throw new Error('usp backward: the forward kept no re-sharded inputs');
  const doutHeads = seqToHeads(backend, grid.ulysses, dout);
  const g = ring.backward(backend, grid.ring, doutHeads, h.q, h.k, h.v, h.fwd, ownHeads(o, grid.ulysses, q));
  doutHeads.dispose();
  // Grads travel in their input's dtype, where the caller would cast them anyway.
  const back = (t: DeviceTensor, like: DeviceTensor) => {
    const c = t.dtype === like.dtype ? t : backend.cast(t, like.dtype);
    const r = headsToSeq(backend, grid.ulysses, c);
    if (c !== t) c.dispose();
    return r;
  };
  const grads = { dq: back(g.dq, q), dk: back(g.dk, k), dv: back(g.dv, v) };
  disposeAll(g.dq, g.dk, g.dv); // dk and dv may share one buffer: a release is idempotent
  return grads;
};

/**
 * The arguments of a Ulysses family; `degrees` reads the grid from the keywords (usp) or fixes it
 * (ulysses: every member one Ulysses rank).
 */
export function uspParse(
  extraKeys: readonly string[],
  degrees: (fn: string, kw: Record<string, unknown>, size: number) => UspDegrees,
): ParseArgs<UspOptions> {
  return (fn, rest, q, k, v) => {
    const a = parseAttnArgs(fn, rest, ATTN_POSITIONAL, extraKeys);
    checkQkv(fn, q, k, v);
    if (k.shape[1] !== q.shape[1])
      fail(
        'E_SHAPE',
        `${fn}: k seqlen ${k.shape[1]} != q seqlen ${q.shape[1]} (ring shards hold equal lengths)`,
      );
    const group = resolveGroup(fn, a.group);
    const o: UspOptions = { ...ringOptions(a, q.shape[3]!), ...degrees(fn, a.kw, group.size) };
    return { o, group, returnAttnProbs: a.returnAttnProbs };
  };
}

export const USP_KEYS = ['ulysses', 'ring', 'ring_impl'] as const;

export const uspVariant: RingVariant<UspOptions> = {
  name: 'usp_attn',
  layout: 'usp',
  check: checkUsp,
  forward: uspForward,
  backward: uspBackward,
};

const family: AttnFamily<UspArgs> = makeFamily<UspOptions, UspArgs>(
  uspVariant,
  DENSE_FRAME,
  uspParse(USP_KEYS, uspDegrees),
);

/**
 * usp_attn_func(q, k, v, dropout_p?, softmax_scale?, causal?, ..., group?, { ulysses, ring,
 * ring_impl }): Ulysses × ring attention over usp shards (b, s/world, h, d) (usp_extract_local).
 * ulysses × ring must be the group size; nheads and nheads_k must be divisible by ulysses.
 */
export const usp_attn_func = family.func;
/** usp_attn_func with packed kv (b, s/world, 2, h_k, d). */
export const usp_attn_kvpacked_func = family.kvpacked;
/** usp_attn_func with packed qkv (b, s/world, 3, h, d). */
export const usp_attn_qkvpacked_func = family.qkvpacked;
export const uspAttnFunc = usp_attn_func;
export const uspAttnKvpackedFunc = usp_attn_kvpacked_func;
export const uspAttnQkvpackedFunc = usp_attn_qkvpacked_func;
