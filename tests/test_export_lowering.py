"""Lowering checks without hardware (issue 15, point 2): the engine's jitted steps at the paper's scale,
exported from this CPU with ``jax.export`` for CUDA and TPU under an abstract mesh of 8 devices.

What is exported (``lowering_helpers``: the library's own code path, abstract inputs, nothing allocated):
the pretrain step of all seven SSL methods and the fine-tune step (``train.step.jit_step`` of
``make_step_fn``, as ``train.loop`` builds it) at ResNet-50, 256 px, ``model.ops='xla'`` (what GPUs and TPUs
run, models.ops) and ``model.dtype`` 'auto' resolved for cuda/tpu (bfloat16); and the linear probe's head
training (``evaluate.linear_probe._fit``: all epochs in one jitted scan, on 2048-d ResNet-50 features).
Each step is exported once for ``platforms=('cuda', 'tpu')`` (the multi-platform artifact: one module, a
platform-index argument, each platform's code in its own branch where they differ: what the checks and the
table read). Only a step whose export fails is also lowered once per platform from the same trace, so that
the table still shows its op counts and custom-call targets (lowering every step per platform as well cost
~25 % of this module's time).

Checked, per step (a table is printed, also without ``-s``, and is part of every assertion message):

- the export succeeds for both platforms, and no CPU custom call is in any module (the oneDNN targets of
  ``kernels.onednn`` and whatever XLA:CPU registers, e.g. LAPACK; a step built with ``ops='cpu_fast'`` fails
  both: ``jax.export`` refuses the oneDNN custom calls and the table lists them); the convolutions are
  bfloat16;
- the batch enters split over ``data``, the train state (parameters, BatchNorm statistics, optimizer and
  method state) replicated, on 8 partitions: from ``Exported.in_shardings_jax`` and the ``sdy.sharding``
  annotations on the module's arguments;
- the train state is donated: every state argument carries ``tf.aliasing_output`` (aliased to its
  updated output) or ``jax.buffer_donor``; no batch argument does;
- every output is replicated, the loss a float32 scalar and the new BatchNorm statistics included: with the
  batch split over 8 devices, a replicated output that reduces over the batch is a global-batch reduction.
  The exported StableHLO holds no collectives yet (Shardy/GSPMD partitioning, which inserts them, runs when
  the module is compiled for a device), so the collectives themselves are checked in
  ``test_collectives_on_8_cpu_devices`` (extended: a subprocess with 8 fake CPU devices compiles the same
  steps at the tiny size and counts the all-reduces: the forward alone all-reduces at least the BatchNorm
  statistics' size, the whole step at least the gradients' plus that).

The probe's ``_fit`` runs on one device by design (features of a few thousand images, host arrays): it is
exported for both platforms with no sharding, and only the custom-call check applies to it.

2 hosts x 4 devices: not a separate export. ``jax.export`` and ``AbstractMesh`` have no notion of hosts or
processes: an exported module records only its partition count (``nr_devices``, ``mhlo.num_partitions``), and
a multi-host run builds the same 1-D ``data`` mesh over all 8 global devices (``train.mesh.make_mesh``); which
process feeds which shard is decided at run time by ``make_array_from_process_local_data``, outside the
module. So the 8-device export below is the very module a 2 x 4 launch compiles (asserted:
``nr_devices == 8`` and no process count in the module's attributes). A 2-D ``('host', 'data')`` mesh would
be a different program from the one the engine runs, so it is not exported here.

Time: one module-scoped fixture traces and exports each step once (~30 s for all nine on 2 idle cores;
BYOL is the slowest: online and target networks, 422 convolutions per platform).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import time

import jax
import pytest
from jax import export
from jax.sharding import AbstractMesh, PartitionSpec as P

import lowering_helpers as H
from fetal_ssl_jax.kernels import onednn
from xla_env import xla_flags_with_devices

PLATFORMS = ("cuda", "tpu")
DEVICES = 8
# 64 images per device (global batch 512), ResNet-50 at 256 px in bfloat16. The SSL methods put both views
# through the network: 128 images per device per step. An estimate, not a measurement (issue 15's device
# benchmark measures it): a ResNet-50 keeps ~100 MB of activations per 224-px image for backward in float32
# (PyTorch, generously counted), so <= ~65 MB per 256-px image in bfloat16, <= ~9 GB for 128 images, about twice
# that with the autoencoder's decoder or BYOL's/MoCo's target forward, plus ~1 GB of float32 parameters,
# gradients, optimizer state and EMA copies: well inside an 80 GB A100/H100 (or a 95 GB TPU v5p), with room for
# XLA's workspace; 128 per device would still fit but leave less margin. (The paper's global batch of 256 is 32
# per device on 8; the per-device batch changes shapes, not what is checked here.)
PER_DEVICE_BATCH = 64
MESH = AbstractMesh((DEVICES,), ("data",))
MULTI = "+".join(PLATFORMS)  # the exported multi-platform module's row in the stats and the table

OP = re.compile(r"\bstablehlo\.(convolution|dot_general|custom_call)\b")
TARGET = re.compile(r"stablehlo\.custom_call @([\w.$-]+)")
BF16_CONV = re.compile(r"stablehlo\.convolution\([^)]*\)[^\n]*:\s*\(tensor<[^>]*xbf16>")


def cpu_only_targets() -> tuple[frozenset[str], tuple[str, ...]]:
    """Custom-call targets that exist only on XLA:CPU: ours (oneDNN) and XLA:CPU's registry (LAPACK, host
    callbacks), read from jaxlib where it tells (an internal API, so prefixes stand in when it does not)."""
    names = set(onednn.TARGETS)
    try:
        from jax._src.lib import _jax
        jax.devices("cpu")  # the registry is filled when the CPU client starts
        names |= set(_jax.custom_call_targets("Host"))
    except Exception:  # noqa: BLE001 - the prefixes below still catch jaxlib's CPU targets
        pass
    return frozenset(names), ("lapack_", "ducc_", "xla_ffi_python_cpu", "xla_buffer_python_cpu", "Fetal")


@dataclasses.dataclass
class PlatformStats:
    chars: int
    ops: collections.Counter
    targets: collections.Counter
    bf16_convs: int


@dataclasses.dataclass
class Lowered:
    name: str
    built: H.Built
    exported: export.Exported | None      # the multi-platform module
    stats: dict[str, PlatformStats]       # MULTI: the exported module; per platform only if export failed
    args: list[str]                       # the multi-platform main's arguments, per flat input (None: dropped)
    seconds: float
    error: str = ""
    checks: dict = dataclasses.field(default_factory=dict)  # name -> True / False / None (does not apply)
    counts: dict = dataclasses.field(default_factory=dict)  # what the table shows next to some checks

    @property
    def cpu_targets(self) -> set[str]:
        names, prefixes = CPU_TARGETS
        return {t for s in self.stats.values() for t in s.targets if t in names or t.startswith(prefixes)}


CPU_TARGETS = cpu_only_targets()


def _platform_stats(text: str) -> PlatformStats:
    return PlatformStats(len(text), collections.Counter(OP.findall(text)), collections.Counter(TARGET.findall(text)),
                         len(BF16_CONV.findall(text)))


def main_args(text: str) -> list[str]:
    """The text of each argument of the module's ``@main`` (type and attributes)."""
    start = text.index("func.func public @main(") + len("func.func public @main(")
    end = text.index(") -> (", start)
    return re.split(r",\s*(?=%arg\d+:)", text[start:end])


def _lower(name: str) -> Lowered:
    t0 = time.time()
    built = H.build(name, MESH, PER_DEVICE_BATCH)
    stats: dict[str, PlatformStats] = {}
    try:
        traced = built.fn.trace(*built.args, **built.kwargs)
        try:
            exp = export.export(built.fn, platforms=PLATFORMS)(*built.args, **built.kwargs)  # reuses jit's trace
        except Exception:
            # A module jax.export refuses (e.g. a custom call without compatibility guarantees, as the oneDNN
            # one): lower the trace once per platform, so that the table still shows what it calls.
            for p in PLATFORMS:
                stats[p] = _platform_stats(traced.lower(lowering_platforms=(p,)).as_text())
            raise
        text = exp.mlir_module()
        stats[MULTI] = _platform_stats(text)
    except Exception as e:  # noqa: BLE001 - recorded, so the table shows every step and the test names it
        lo = Lowered(name, built, None, stats, [], time.time() - t0, f"{type(e).__name__}: {str(e)[:2000]}")
        lo.checks = checks(lo, "")
        return lo
    args = [a for a in main_args(text) if '"_platform_index"' not in a]
    per_flat: list = [None] * len(exp.in_avals)
    for i, a in zip(sorted(exp.module_kept_var_idx), args):
        per_flat[i] = a
    lo = Lowered(name, built, exp, stats, per_flat, time.time() - t0)
    lo.checks = checks(lo, text)
    return lo


# --- what the checks read ---------------------------------------------------------------------------------

def _flat_ranges(lo: Lowered) -> tuple[range, range]:
    """Flat input indices of the state and of the batch (train steps: (state, batch, rng))."""
    if not lo.built.state_argnums:
        return range(0), range(0)
    n_state = len(jax.tree.leaves(lo.built.args[0]))
    n_batch = len(jax.tree.leaves(lo.built.args[1]))
    return range(n_state), range(n_state, n_state + n_batch)


def _text_sharding(arg: str) -> str:
    m = re.search(r"sdy\.sharding = #sdy\.sharding<@mesh, \[(.*?)\]>", arg)
    if m:
        return "data" if m.group(1).startswith('{"data"}') else ("replicated" if '"' not in m.group(1) else m.group(1))
    m = re.search(r'mhlo\.sharding = "([^"]*)"', arg)  # GSPMD annotations, if Shardy is switched off
    if m:
        s = m.group(1)
        return "replicated" if "replicated" in s else ("data" if s.startswith(f"{{devices=[{DEVICES}") else s)
    return "none"


def _donated(arg: str) -> bool:
    return "tf.aliasing_output" in arg or "jax.buffer_donor" in arg


def checks(lo: Lowered, text: str) -> dict[str, bool | None]:
    """Each property of one step (``text``: its multi-platform module): True / False, None where it does not
    apply (the probe's sharding)."""
    out: dict[str, bool | None] = dict(exported=lo.exported is not None)
    out["no_cpu_custom_call"] = bool(lo.stats) and not lo.cpu_targets
    if not out["exported"] or not lo.built.state_argnums:
        out.update(partitions_8=None, batch_over_data=None, state_replicated=None, state_donated=None,
                   outputs_replicated=None, loss_replicated_scalar=None)
        if out["exported"]:
            out["single_device"] = lo.exported.nr_devices == 1
        return out
    exp = lo.exported
    state_idx, batch_idx = _flat_ranges(lo)
    in_sh = exp.in_shardings_jax(MESH)
    kept = set(exp.module_kept_var_idx)
    out["partitions_8"] = exp.nr_devices == DEVICES and f"mhlo.num_partitions = {DEVICES} " in text \
        and "process" not in text.split("func.func", 1)[0]
    # Inputs the step does not read (the autoencoder's view2, the pipeline's indices) are left out of the
    # module (no sharding recorded): only the kept ones are checked.
    out["batch_over_data"] = any(i in kept for i in batch_idx) and all(
        in_sh[i].spec == P("data") and _text_sharding(lo.args[i]) == "data" for i in batch_idx if i in kept)
    out["state_replicated"] = any(i in kept for i in state_idx) and all(
        in_sh[i].spec == P() and _text_sharding(lo.args[i]) == "replicated" for i in state_idx if i in kept)
    state_args = [lo.args[i] for i in state_idx if i in kept]
    lo.counts = dict(batch=sum(i in kept for i in batch_idx), state=len(state_args),
                     alias=sum("tf.aliasing_output" in a for a in state_args),
                     donor=sum("jax.buffer_donor" in a for a in state_args))
    out["state_donated"] = all(_donated(lo.args[i]) for i in state_idx if i in kept) \
        and not any(_donated(a) for i, a in enumerate(lo.args) if a is not None and i not in state_idx) \
        and len(kept & set(state_idx)) > 0
    out_sh = exp.out_shardings_jax(MESH)
    out["outputs_replicated"] = all(s.spec == P() for s in out_sh)
    new_state, metrics = jax.tree.unflatten(exp.out_tree, list(range(len(exp.out_avals))))
    loss = exp.out_avals[metrics["loss"]]
    stats_idx = jax.tree.leaves(new_state.batch_stats)
    out["loss_replicated_scalar"] = loss.shape == () and loss.dtype == jax.numpy.float32 \
        and out_sh[metrics["loss"]].spec == P() and len(stats_idx) > 0 \
        and all(out_sh[i].spec == P() for i in stats_idx)
    return out


def table(lowered: dict[str, Lowered]) -> str:
    cols = ("step", "platform", "exported", "dtype", "mlir chars", "conv", "bf16 conv", "dot", "custom_call",
            "no CPU cc", "batch/data (args)", "state rep (args)", "donated (alias+donor)", "loss rep", "s")
    rows = []
    yn = lambda v: "-" if v is None else ("yes" if v else "NO")  # noqa: E731
    for name, lo in lowered.items():
        c, k = lo.checks, lo.counts
        for p in [q for q in PLATFORMS + (MULTI,) if q in lo.stats] or [MULTI]:
            s = lo.stats.get(p)
            targets = ",".join(f"{t}x{n}" for t, n in sorted(s.targets.items())) if s and s.targets else "0"
            rows.append((name, p, yn(c["exported"]), lo.built.dtype, s.chars if s else "-",
                         s.ops["convolution"] if s else "-", s.bf16_convs if s else "-",
                         s.ops["dot_general"] if s else "-", targets, yn(c["no_cpu_custom_call"]),
                         yn(c["batch_over_data"]) + (f" ({k['batch']})" if k else ""),
                         yn(c["state_replicated"]) + (f" ({k['state']})" if k else ""),
                         yn(c["state_donated"]) + (f" ({k['alias']}+{k['donor']})" if k else ""),
                         yn(c["loss_replicated_scalar"]), f"{lo.seconds:.1f}"))
    widths = [max(len(str(r[i])) for r in rows + [cols]) for i in range(len(cols))]
    fmt = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    head = (f"exported for {'/'.join(PLATFORMS)} from CPU, abstract mesh {DEVICES} x 'data', ResNet-50 at 256 px, "
            f"{PER_DEVICE_BATCH} per device ({MULTI}: the exported multi-platform module, whose convolutions sit in "
            f"per-platform branches, so count twice; a step whose export failed shows its trace lowered for each "
            f"platform instead)")
    return "\n".join([head, fmt(cols)] + [fmt(r) for r in rows])


@pytest.fixture(scope="module")
def lowered() -> dict[str, Lowered]:
    out = {}
    for name in H.STEPS:
        out[name] = _lower(name)
    return out


def _explain(lowered, name: str) -> str:
    lo = lowered[name]
    return f"{name}: {lo.checks}\n{lo.error}\n{table(lowered)}"


@pytest.mark.parametrize("name", H.STEPS)
def test_exports_for_cuda_and_tpu_without_cpu_custom_calls(lowered, name):
    lo = lowered[name]
    assert lo.stats and not lo.cpu_targets, f"CPU custom calls {sorted(lo.cpu_targets)}\n" + _explain(lowered, name)
    assert lo.exported is not None, _explain(lowered, name)
    assert tuple(lo.exported.platforms) == PLATFORMS, _explain(lowered, name)
    s = lo.stats[MULTI]  # both platforms' branches
    assert s.ops["convolution"] + s.ops["dot_general"] > 0, _explain(lowered, name)
    if lo.built.state_argnums:  # the ResNet's convolutions (forward, both gradients) run in the model dtype
        assert lo.built.dtype == "bfloat16" and s.bf16_convs == s.ops["convolution"] > 0, _explain(lowered, name)


TRAIN_STEPS = tuple(n for n in H.STEPS if n != "probe")


@pytest.mark.parametrize("name", TRAIN_STEPS)
def test_batch_sharded_state_replicated_and_donated(lowered, name):
    c = lowered[name].checks
    for key in ("partitions_8", "batch_over_data", "state_replicated", "state_donated"):
        assert c[key], f"{key} failed\n" + _explain(lowered, name)


@pytest.mark.parametrize("name", TRAIN_STEPS)
def test_loss_and_batch_statistics_are_replicated_global_values(lowered, name):
    c = lowered[name].checks
    assert c["outputs_replicated"] and c["loss_replicated_scalar"], _explain(lowered, name)


def test_probe_head_is_a_single_device_program(lowered):
    lo = lowered["probe"]
    assert lo.exported is not None and lo.exported.nr_devices == 1, _explain(lowered, "probe")


def test_table_has_every_step(lowered, capsys):
    text = table(lowered)
    with capsys.disabled():  # visible without -s: a regression shows in the CI log
        print("\n" + text)
    bad = {n: {k: v for k, v in lo.checks.items() if v is False} for n, lo in lowered.items()}
    bad = {n: v for n, v in bad.items() if v}
    assert not bad, f"failed checks: {bad}\n{text}"


# --- the collectives, compiled: extended ----------------------------------------------------------------------

_SUBPROCESS = textwrap.dedent("""
    import json, re, sys
    import jax, numpy as np
    import lowering_helpers as H
    from fetal_ssl_jax.train import mesh as mesh_lib
    mesh = mesh_lib.make_mesh()
    assert mesh.size == 8, mesh
    SHAPE = re.compile(r"\\b[a-z]+\\d*\\[([\\d,]*)\\]")
    def all_reduces(txt):
        n = el = 0
        for line in txt.splitlines():
            m = re.search(r"=\\s*(.*?)\\sall-reduce(?:-start)?\\(", line)
            if m:
                n += 1
                el += sum(int(np.prod([int(d) for d in s.split(",") if d])) for s in SHAPE.findall(m.group(1)))
        return n, el
    for name in sys.argv[1:]:
        b = H.build(name, mesh, 2, variant="tiny", platform="cpu")
        state = b.args[0]
        step = b.fn.lower(*b.args).compile().as_text()
        fwd = b.forward.lower(*b.args).compile().as_text()
        print(json.dumps(dict(name=name, params=sum(int(x.size) for x in jax.tree.leaves(state.params)),
                              batch_stats=sum(int(x.size) for x in jax.tree.leaves(state.batch_stats)),
                              step=all_reduces(step), forward=all_reduces(fwd))), flush=True)
""")


@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.timeout(1800)
def test_collectives_on_8_cpu_devices():
    """The same jitted steps (tiny size, float32, ops='xla') compiled for 8 fake CPU devices: SPMD partitioning
    inserts the all-reduces that make BatchNorm statistics, losses and gradients global-batch values.

    Forward only (loss and new BatchNorm statistics; XLA drops the unused backward): all-reduced elements >=
    the BatchNorm statistics' size (each layer's batch sum and sum of squares per channel). Whole step: >= the
    parameter count (the gradients) plus that. ~30 s per step on 2 cores (compiles).
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               XLA_FLAGS=xla_flags_with_devices(DEVICES, os.environ.get("XLA_FLAGS", "")))
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), H.ROOT,
                                         env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-c", _SUBPROCESS, *TRAIN_STEPS], env=env, cwd=H.ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-5000:]
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    text = "\n".join(f"{r['name']:12s} all-reduce step: {r['step'][0]:3d} ops {r['step'][1]:8d} elements "
                     f"(params {r['params']}), forward: {r['forward'][0]:3d} ops {r['forward'][1]:6d} elements "
                     f"(BN statistics {r['batch_stats']})" for r in rows)
    print("\n" + text)
    assert [r["name"] for r in rows] == list(TRAIN_STEPS), text
    for r in rows:
        assert r["forward"][1] >= r["batch_stats"] > 0, f"{r['name']}: BatchNorm statistics not all-reduced\n{text}"
        assert r["step"][1] >= r["params"] + r["batch_stats"], f"{r['name']}: gradients not all-reduced\n{text}"
