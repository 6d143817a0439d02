// Worker side of driver mode: each rank uploads its shards, calls the public function by its
// Python name (so driver mode exercises exactly what SPMD users call), and keeps the output
// for backward until the caller disposes the call.
import type { RankContext } from '../../runtime/context.js';
import type { DType, HostData } from '../../runtime/dtype.js';
import { fail } from '../../runtime/errors.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { ringFunction } from './registry.js';

export interface HostShard {
  data: HostData;
  shape: number[];
  dtype: DType;
}

export interface ForwardTask {
  callId: number;
  name: string;
  tensors: HostShard[];
  kwargs: Record<string, unknown>;
}

interface Saved {
  out: DeviceTensor;
  lse: DeviceTensor;
  inputs: DeviceTensor[];
}

const saved = new Map<number, Saved>();

function host(ctx: RankContext, t: DeviceTensor): HostShard {
  return { data: ctx.backend.download(t), shape: [...t.shape], dtype: t.dtype };
}

export function forward(ctx: RankContext, task: ForwardTask): { out: HostShard; lse: HostShard } {
  const entry = ringFunction(task.name);
  const inputs = task.tensors.map((t) => ctx.tensor(t, t.dtype, true));
  const result = entry.fn(...inputs, { ...task.kwargs, return_attn_probs: true });
  const [out, lse] = result as [DeviceTensor, DeviceTensor, null];
  saved.set(task.callId, { out, lse, inputs });
  return { out: host(ctx, out), lse: host(ctx, lse) };
}

export function backward(ctx: RankContext, task: { callId: number; dout: HostShard }): HostShard[] {
  const s = saved.get(task.callId);
  if (!s) fail('E_ARG', `call ${task.callId} was disposed or never ran on rank ${ctx.rank}`);
  const dout = ctx.tensor(task.dout, s.inputs[0]!.dtype);
  s.out.backward(dout);
  dout.dispose();
  return s.inputs.map((t) => {
    const g = host(ctx, t.grad!);
    t.grad!.dispose();
    t.grad = null;
    return g;
  });
}

export function dispose(_ctx: RankContext, task: { callId: number }): void {
  const s = saved.get(task.callId);
  if (!s) return;
  saved.delete(task.callId);
  s.out.dispose();
  s.lse.dispose();
  for (const t of s.inputs) t.dispose();
}
