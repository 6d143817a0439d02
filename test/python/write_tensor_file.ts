// Writes the tensor file read_tensor_file.py checks (run on a machine with Python + numpy + msgpack).
import ndarray from 'ndarray';
import { save } from '../../index.js';
import { fromFloat32 } from '../../runtime/dtype.js';

const ref = Float32Array.from({ length: 24 }, (_, i) => i / 8);
await save(process.argv[2] ?? 'tensors.msgpack', {
  f32: ndarray(ref, [2, 3, 4]),
  bf16: { data: fromFloat32(ref, 'bfloat16'), shape: [2, 3, 4], dtype: 'bfloat16' },
  f16: { data: fromFloat32(ref, 'float16'), shape: [2, 3, 4], dtype: 'float16' },
  cu_seqlens: { data: Int32Array.from([0, 3, 8]), shape: [3] },
  t: ndarray(ref, [6, 4]).transpose(1, 0),
});
