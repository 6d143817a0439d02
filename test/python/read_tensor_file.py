# Reads a tensor file written by ring-flash-attn's save() with the README's few lines of msgpack
# + numpy, and checks the values write_tensor_file.js put there. Exit code 0 on success.
import sys
import msgpack
import numpy as np


def load(path):
    doc = msgpack.unpackb(open(path, "rb").read())
    out = {}
    for name, t in doc["tensors"].items():
        if t["dtype"] == "bfloat16":  # bf16 bits -> float32
            a = (np.frombuffer(t["data"], "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(t["data"], np.dtype(t["dtype"]).newbyteorder("<"))
        out[name] = a.reshape(t["shape"])
    return out


t = load(sys.argv[1])
ref = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8
checks = {
    "float32": np.array_equal(t["f32"], ref),
    "bfloat16": np.array_equal(t["bf16"], ref),  # k/8 for k < 24 is exact in bf16
    "float16": np.array_equal(t["f16"].astype(np.float32), ref),
    "int32": np.array_equal(t["cu_seqlens"], np.array([0, 3, 8], dtype=np.int32)),
    "transposed view": np.array_equal(t["t"], ref.reshape(6, 4).T),
}
for k, ok in checks.items():
    print(f"python read {k}: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if all(checks.values()) else 1)
