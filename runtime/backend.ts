import { performance } from 'node:perf_hooks';
import type { Comm, Group } from './comm.js';
import { DTYPE_CODE, dtypeBytes, type DType, type HostData } from './dtype.js';
import { fail } from './errors.js';
import * as args from './kernel_args.js';
import type { NativeKernels } from './native.js';
import { DeviceTensor, contiguousStrides, numelOf, type Storage } from './tensor.js';

const POISON = process.env.RFA_POISON === '1';

/**
 * The one interface the ring code in api/ calls. A backend supplies storage, host transfers,
 * the native kernel entry points and a communicator; everything else (shape checks, argument
 * objects, rank-N copies) is shared here so both backends behave identically.
 */
export abstract class Backend {
  abstract readonly name: 'cpu' | 'cuda';
  /** Native kernel entry points of this backend (same parameter objects on both). */
  protected abstract readonly kernels: NativeKernels;
  private readonly comms = new Map<string, Comm>();
  private sent = 0;

  protected abstract allocStorage(numel: number, dtype: DType): Storage;
  /** Copies host data into a new contiguous tensor. */
  abstract upload(data: HostData, shape: readonly number[], dtype: DType): DeviceTensor;
  /** Copies a tensor (any view) to a new host array in C order. */
  abstract download(t: DeviceTensor): HostData;
  /** Sets every element of a contiguous tensor (16-bit tensors: 0 or NaN only). */
  abstract fill(t: DeviceTensor, value: number): void;
  /** Waits for all queued work of this rank (cpu: no-op). */
  abstract sync(): void;
  /**
   * Starts timing the work queued from now on; the returned function, called once that work is
   * queued, waits for it and gives the seconds it took. Here the host clock around a sync; the
   * cuda backend reads CUDA events, as the Python project's benchmark does.
   */
  startTimer(): () => number {
    const t0 = performance.now();
    return () => {
      this.sync();
      return (performance.now() - t0) / 1000;
    };
  }
  /** The communicator of `group`: made on first use (newComm) and kept per group key. */
  comm(group: Group): Comm {
    let c = this.comms.get(group.key);
    if (!c) this.comms.set(group.key, (c = this.counted(this.newComm(group))));
    return c;
  }

  /**
   * Bytes this rank's point-to-point sends (Comm.sendRecv) have carried since the backend was
   * made; collectives are not counted. Read it before and after a call for what the call moved.
   */
  sentBytes(): number {
    return this.sent;
  }

  /** `c` with every sendRecv's send bytes added to sentBytes. */
  private counted(c: Comm): Comm {
    return {
      group: c.group,
      sendable: (t) => c.sendable(t),
      sendRecv: (sends, recvs) => {
        for (const s of sends) this.sent += s.tensor.numel * dtypeBytes(s.tensor.dtype);
        return c.sendRecv(sends, recvs);
      },
      ...(c.abandon ? { abandon: () => c.abandon!() } : {}),
      allGather: (send, recv) => c.allGather(send, recv),
      reduceScatter: (send, recv) => c.reduceScatter(send, recv),
    };
  }

  /** After a failed call: every communicator forgets what it had in flight (Comm.abandon). */
  abandonComms(): void {
    for (const c of this.comms.values()) c.abandon?.();
  }

  /**
   * Until the returned function runs, comm() answers `stand.group` (by key) with `stand`: the solo
   * benchmark's communicator, which plays the ring's missing peers. Its sends count in
   * sentBytes: a solo rank's are the bytes the real ring would move.
   */
  substituteComm(stand: Comm): () => void {
    const key = stand.group.key,
      prev = this.comms.get(key);
    this.comms.set(key, this.counted(stand));
    return () => {
      if (prev) this.comms.set(key, prev);
      else this.comms.delete(key);
    };
  }

  protected abstract newComm(group: Group): Comm;
  /** Copies int32 values into backend memory (segment tables of varlen calls). */
  protected abstract uploadInt32(values: Int32Array): { data: Int32Array | bigint; release(): void };
  /** Peak bytes allocated on this rank since the last reset. */
  abstract peakBytes(): number;
  abstract resetPeak(): void;

  /**
   * A new contiguous tensor with unspecified contents. With RFA_POISON=1 in the environment the
   * contents are NaN, so a test sees any element a kernel failed to write.
   */
  empty(shape: readonly number[], dtype: DType): DeviceTensor {
    const t = new DeviceTensor(this.allocStorage(numelOf(shape), dtype), shape, contiguousStrides(shape));
    if (POISON) this.fill(t, NaN);
    return t;
  }

  full(shape: readonly number[], dtype: DType, value: number): DeviceTensor {
    const t = this.empty(shape, dtype);
    this.fill(t, value);
    return t;
  }

  zeros(shape: readonly number[], dtype: DType): DeviceTensor {
    return this.full(shape, dtype, 0);
  }

  /** dst[...] = src[...] for views of equal shape and dtype, rank 4 or more (head_dim contiguous). */
  copy(dst: DeviceTensor, src: DeviceTensor): void {
    if (src.ndim < 4) {
      if (!src.isContiguous() || !dst.isContiguous())
        fail('E_SHAPE', 'copy of a view below rank 4 needs contiguous tensors');
      const n = src.numel;
      this.copy(dst.reshape([1, 1, 1, n]), src.reshape([1, 1, 1, n]));
      return;
    }
    if (src.ndim > 4) {
      for (let i = 0; i < src.shape[0]!; i++) this.copy(dst.select(0, i), src.select(0, i));
      return;
    }
    this.kernels.copyBsh(args.copyArgs(dst, src));
  }

  /** A new contiguous tensor holding `src` converted to `dtype`. */
  cast(src: DeviceTensor, dtype: DType): DeviceTensor {
    const out = this.empty(src.shape, dtype);
    this.castInto(out, src);
    return out;
  }

  /** dst[...] = src[...] converted to dst's dtype, for views of equal shape: one pass when both are contiguous. */
  castInto(dst: DeviceTensor, src: DeviceTensor): void {
    if (dst.shape.join() !== src.shape.join())
      fail('E_SHAPE', `castInto: shapes differ (${dst.shape} vs ${src.shape})`);
    if (!dst.isContiguous()) {
      const staged = this.cast(src, dst.dtype);
      this.copy(dst, staged);
      staged.dispose();
      return;
    }
    const from = src.isContiguous() ? src : this.contiguous(src);
    this.kernels.cast({
      src: args.flat(from, 'src'),
      src_dtype: DTYPE_CODE[from.dtype],
      dst: args.flat(dst, 'dst'),
      dst_dtype: DTYPE_CODE[dst.dtype],
      n: from.numel,
    });
    if (from !== src) from.dispose();
  }

  contiguous(src: DeviceTensor): DeviceTensor {
    const out = this.empty(src.shape, src.dtype);
    this.copy(out, src);
    return out;
  }

  /** dst += src, both contiguous float32 of equal size. */
  add(dst: DeviceTensor, src: DeviceTensor): void {
    if (dst.dtype !== 'float32' || src.dtype !== 'float32' || dst.numel !== src.numel)
      fail('E_SHAPE', 'add needs two float32 tensors of equal size');
    this.kernels.addF32({ dst: args.flat(dst, 'dst'), src: args.flat(src, 'src'), n: dst.numel });
  }

  /**
   * A segment table for varlen kernel calls (see native/attn_params.h Segments). Lengths must
   * fit the tensors they will be used with; the kernels re-check on the cpu backend.
   */
  segments(t: {
    qStart: readonly number[];
    qLen: readonly number[];
    kStart: readonly number[];
    kLen: readonly number[];
  }): args.SegmentTable {
    const n = t.qStart.length;
    if ([t.qLen, t.kStart, t.kLen].some((a) => a.length !== n))
      fail('E_ARG', 'segments: the four arrays must have one entry per sequence');
    const packed = Int32Array.from([...t.qStart, ...t.qLen, ...t.kStart, ...t.kLen]);
    const buf = this.uploadInt32(packed);
    const view = (i: number) => ({ data: buf.data, offset: i * n, strides: [1] });
    return {
      numSeqs: n,
      maxSeqlenQ: Math.max(0, ...t.qLen),
      maxSeqlenK: Math.max(0, ...t.kLen),
      native: {
        num_seqs: n,
        q_start: view(0),
        q_len: view(1),
        k_start: view(2),
        k_len: view(3),
        max_seqlen_q: Math.max(0, ...t.qLen),
        max_seqlen_k: Math.max(0, ...t.kLen),
      },
      release: () => buf.release(),
    };
  }

  /**
   * Global positions of a kernel call's rows (native/attn_params.h ScoreMods): `q` and `k` one
   * per query and key row of the call's tensors, increasing over each span; `diag` the global
   * seqlen_k - seqlen_q; `seqTok` (varlen) the packed index of each segment's sequence start.
   */
  positions(t: {
    q: Int32Array;
    k: Int32Array;
    diag: number;
    seqTok?: readonly number[];
  }): args.PositionTable {
    const nt = t.seqTok?.length ?? 0;
    const packed = new Int32Array(t.q.length + t.k.length + nt);
    packed.set(t.q, 0);
    packed.set(t.k, t.q.length);
    if (t.seqTok) packed.set(t.seqTok, t.q.length + t.k.length);
    const buf = this.uploadInt32(packed);
    const view = (offset: number) => ({ data: buf.data, offset, strides: [1] });
    const native: Record<string, unknown> = { q_pos: view(0), k_pos: view(t.q.length), diag: t.diag };
    if (t.seqTok) native.seq_tok = view(t.q.length + t.k.length);
    return { native, release: () => buf.release() };
  }

  /**
   * out, lse (fp32) = attention of q against k/v (see native/attn_params.h); with `merge`, the
   * result is merged into the running out/lse (update_out_and_lse, fused into the kernel).
   */
  flashFwd(
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    out: DeviceTensor,
    lse: DeviceTensor,
    o: args.FwdOptions,
  ): void {
    this.kernels.flashFwd(args.fwdArgs(q, k, v, out, lse, o));
  }

  /** dsum = rowsum(dout * out), once per backward with the global out. */
  flashBwdDot(dout: DeviceTensor, out: DeviceTensor, dsum: DeviceTensor): void {
    this.kernels.flashBwdDot(args.bwdDotArgs(dout, out, dsum));
  }

  flashBwd(t: args.BwdTensors, o: args.BwdOptions): void {
    this.kernels.flashBwd(args.bwdArgs(t, o));
  }

  /** Exact in-place lse merge of a block result into the running (out, lse). */
  merge(out: DeviceTensor, lse: DeviceTensor, blockOut: DeviceTensor, blockLse: DeviceTensor): void {
    this.kernels.merge(args.mergeArgs(out, lse, blockOut, blockLse));
  }
}
