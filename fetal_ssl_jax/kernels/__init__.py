"""Native CPU kernels called from jitted JAX code through the XLA FFI (optional, CPU only)."""
