"""Which kernels the model runs: one choice, resolved once from the config and the platform.

``model.ops`` in a config:

- ``"xla"``: XLA's own convolutions, ``reduce_window`` max pool, BatchNorm by autodiff, both SSL
  views as one interleaved batch. What GPUs and TPUs run: no CPU custom call, nothing hand-written,
  until a measurement on that platform says otherwise (issue 15's device benchmark).
- ``"cpu_fast"``: the CPU speed-ups, each measured on a 2-core CPU against PyTorch's step:
  oneDNN convolutions through the XLA FFI where the kernel could be built (``kernels/onednn``),
  im2col + matmul for outputs of at most ``IM2COL_MAX_OUTPUT_PIXELS`` pixels, closed-form
  BatchNorm backward and the stem max pool's two-pass backward, views as one batch only
  with oneDNN (XLA:CPU runs one batch of 2B slower than two of B), and JAX's straight-line threefry
  lowering for the random draws (``kernels/threefry``: the same bits, compiled in a fraction of the time).
- ``"auto"`` (default): ``cpu_fast`` on the CPU backend, ``xla`` elsewhere.

:func:`resolve` turns that into an :class:`Ops` value, the only place that looks at the platform,
the kernel's availability and the kernel's environment settings (``FETAL_SSL_JAX_CONV=xla``
keeps oneDNN off, e.g. to compare; ``FETAL_SSL_JAX_ONEDNN_THREADS``, ``..._DW_ROWS`` tune it).
The backbone builder calls it; modules receive the result as data and never read the
environment or the backend while tracing, and methods read only ``views_as_one_batch``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

from fetal_ssl_jax.config_validation import MODEL_OPS as CHOICES

# Output H*W at or below which cpu_fast uses im2col + matmul. Measured on a 2-core CPU, batch 64,
# forward+backward of one 3x3 conv (lax vs im2col, ms): 1x1 out 512->512: 46 vs 6; 2x2: 1097 vs 20;
# 3x3: 52 vs 43; 4x4: 81 vs 87; 7x7 256->256: 65 vs 79; 16x16 128->128: 85 vs 144.
IM2COL_MAX_OUTPUT_PIXELS = 9


@dataclasses.dataclass(frozen=True)
class Ops:
    """The resolved kernel choice (hashable: it is a field of Flax modules)."""

    name: str = "xla"                 # what was resolved: "xla" or "cpu_fast"
    onednn: bool = False              # oneDNN convolutions (float32 only; others fall back to XLA's)
    im2col_max_pixels: int = 0        # im2col + matmul for outputs of at most this many pixels (0: never)
    handwritten_grads: bool = False   # closed-form BatchNorm backward, two-pass max-pool backward
    views_as_one_batch: bool = True   # SSL views through the network as one interleaved batch
    onednn_threads: int = 0           # OpenMP threads per oneDNN call (0: all cores)
    onednn_dw_rows: int | None = None  # oneDNN weight-gradient chunk rows (None: the kernel's default)

    @property
    def maxpool(self) -> str:
        return "reshape" if self.handwritten_grads else "reduce_window"


XLA = Ops()


def resolve(choice: Any = "auto", backend: str | None = None) -> Ops:
    """``choice``: 'auto' | 'xla' | 'cpu_fast', a model config holding ``ops``, or an :class:`Ops` (kept)."""
    if isinstance(choice, Ops):
        return choice
    if choice is not None and not isinstance(choice, str):  # a model config
        choice = choice.get("ops", "auto")
    choice = str(choice or "auto").lower()
    if choice not in CHOICES:
        raise ValueError(f"model.ops must be one of {', '.join(CHOICES)}; got {choice!r}")
    backend = backend or jax.default_backend()
    if choice == "auto":
        choice = "cpu_fast" if backend == "cpu" else "xla"
    if choice == "xla":
        return XLA
    from fetal_ssl_jax.kernels import onednn, threefry  # CPU kernels: only looked at when cpu_fast is chosen
    use_onednn = backend == "cpu" and onednn.available()
    if backend == "cpu":
        threefry.use_unrolled_on_cpu()  # process-wide; changes compile time, not bits
    threads, dw_rows = onednn.settings_from_env()
    return Ops(name="cpu_fast", onednn=use_onednn, im2col_max_pixels=IM2COL_MAX_OUTPUT_PIXELS,
               handwritten_grads=True, views_as_one_batch=use_onednn, onednn_threads=threads,
               onednn_dw_rows=dw_rows)
