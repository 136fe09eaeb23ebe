"""Expands a grid config (configs/paper_grid.py, configs/variance_vs_size.py) into sweep jobs.

Grid config fields (ml_collections):
  methods, pretrain_config ('configs/{method}.py'), pretrain_variant, pretrain_overrides, pretrain_processes
  baselines ('random'), imagenet_weights (path: adds the 'imagenet' initialisation)
  protocols, eval_config ('configs/{protocol}.py'), eval_variant, eval_overrides, fractions, seeds
  protocol_overrides (optional): {protocol: overrides} added after eval_overrides for that protocol only
  protocol_fractions (optional): {protocol: fractions} instead of ``fractions`` for that protocol
  method_overrides (optional): {method: overrides} added after pretrain_overrides for that method only
    (e.g. equal-compute step budgets)
  monitor_every (optional, 0): > 0 runs pretraining's periodic kNN evaluator every N steps on the grid's
    labelled store (train bank, val queries; evaluate/monitor.py), so the curves show when a budget is enough
  share_features (optional, False): probe and kNN jobs share one frozen-feature cache (<DIR>/features),
    so each encoder's forward pass over the labelled store runs once for all fractions and seeds
  frame_data: {name: data spec} (one pretraining per method and frame set), labelled_data: data spec
A data spec names a prepared ``store``; or an ``export`` folder to prepare; or a phantom
``synth_preset`` (+ ``synth_args``) to simulate first. Data jobs are shared when two specs
need the same simulation.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import ml_collections

from fetal_ssl_jax.experiments.jobs import COORD, PID, ROOT, Job, dedupe, topological


def data_spec(store: str = "", export: str = "", synth_preset: str = "", synth_args: tuple[str, ...] = (),
              synth_seed: int = 0, size: int = 256, stride: int = 5, prepare_args: tuple[str, ...] = ()
              ) -> ml_collections.ConfigDict:
    """One data source of a grid: a prepared store, an export to prepare, or a simulation."""
    return ml_collections.ConfigDict(dict(store=store, export=export, synth_preset=synth_preset,
                                          synth_args=tuple(synth_args), synth_seed=synth_seed, size=size,
                                          stride=stride, prepare_args=tuple(prepare_args)))


def fmt_fraction(f: float) -> str:
    return f"{float(f):g}"


def _path(p: str) -> str:
    return p if os.path.isabs(p) else os.path.join(ROOT, p)


class _Data:
    """Builds the synth/prepare jobs of the grid's data specs (each simulation once)."""

    def __init__(self, sweep_dir: str):
        self.dir = os.path.join(sweep_dir, "data")
        self.jobs: list[Job] = []
        self._synth: dict[str, str] = {}   # key of (preset, seed, args) -> export folder

    def _export(self, name: str, spec: ml_collections.ConfigDict) -> tuple[str, list[str]]:
        if spec.export:
            return os.path.abspath(spec.export), []
        if not spec.synth_preset:
            raise ValueError(f"data '{name}': give store, export or synth_preset")
        key = repr((spec.synth_preset, int(spec.synth_seed), tuple(spec.synth_args)))
        if key not in self._synth:
            tag = name if name not in {os.path.basename(v) for v in self._synth.values()} else \
                f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"
            out = os.path.join(self.dir, tag)
            self._synth[key] = out
            self.jobs.append(Job(id=f"data/synth-{tag}", kind="synth", workdir=out,
                                 marker=os.path.join(out, "phantom.json"),
                                 args=["synth", "--out", out, "--preset", spec.synth_preset, "--seed",
                                       str(int(spec.synth_seed)), "--no-progress", *map(str, spec.synth_args)]))
        out = self._synth[key]
        return out, [f"data/synth-{os.path.basename(out)}"]

    def frames(self, name: str, spec: ml_collections.ConfigDict) -> tuple[str, list[str]]:
        """(frame store path, job ids it needs)."""
        if spec.store:
            return os.path.abspath(spec.store), []
        export, deps = self._export(name, spec)
        store = os.path.join(self.dir, f"frames-{name}")
        jid = f"data/frames-{name}"
        self.jobs.append(Job(id=jid, kind="prepare", workdir=store, marker=os.path.join(store, "manifest.json"),
                             deps=deps, args=["prepare", "frames", "--src", os.path.join(export, "videos"), "--out",
                                              store, "--size", str(int(spec.size)), "--stride", str(int(spec.stride)),
                                              "--quiet", *map(str, spec.prepare_args)]))
        return store, [jid]

    def labelled(self, spec: ml_collections.ConfigDict) -> tuple[str, list[str]]:
        if spec.store:
            return os.path.abspath(spec.store), []
        export, deps = self._export("labelled", spec)
        store = os.path.join(self.dir, "labelled")
        self.jobs.append(Job(id="data/labelled", kind="prepare", workdir=store,
                             marker=os.path.join(store, "manifest.json"), deps=deps,
                             args=["prepare", "images", "--csv", os.path.join(export, "labels.csv"), "--out", store,
                                   "--size", str(int(spec.size)), "--quiet", *map(str, spec.prepare_args)]))
        return store, ["data/labelled"]


def _variant(path: str, variant: str) -> str:
    return f"{path}:{variant}" if variant else path


def expand(grid: ml_collections.ConfigDict, sweep_dir: str) -> list[Job]:
    """All jobs of the grid, in dependency order: data, then pretraining, then evaluation."""
    sweep_dir = os.path.abspath(sweep_dir)
    data = _Data(sweep_dir)
    frame_sets = dict(grid.frame_data.items()) if len(grid.methods) else {}
    multi = len(frame_sets) > 1
    pretrain: list[Job] = []
    inits: list[tuple[str, str, list[str], dict[str, Any]]] = []  # (label, init spec, deps, info)
    nproc = int(grid.get("pretrain_processes", 1))
    per_method = dict(grid.get("method_overrides", None) or {})
    stores = {name: data.frames(name, spec) for name, spec in frame_sets.items()}  # frame exports named first
    labelled, ldeps = data.labelled(grid.labelled_data)
    every = int(grid.get("monitor_every", 0))
    monitor = ((f"--config.monitor.every={every}", f"--config.monitor.labelled_store={labelled}") if every > 0
               else ())
    for set_name, (store, deps) in stores.items():
        for method in grid.methods:
            jid = f"pretrain/{set_name}/{method}" if multi else f"pretrain/{method}"
            wd = os.path.join(sweep_dir, jid)
            args = ["pretrain", "--config", _variant(_path(grid.pretrain_config.format(method=method)),
                                                     grid.pretrain_variant),
                    "--workdir", wd, f"--config.data.store={store}", *map(str, grid.pretrain_overrides),
                    *map(str, per_method.get(method, ())), *monitor]
            if nproc > 1:
                args += ["--coordinator", COORD, "--num-processes", str(nproc), "--process-id", PID]
            label = f"{method}@{set_name}" if multi else method
            info = dict(method=method, init=label, pretrain_data=set_name)
            pretrain.append(Job(id=jid, kind="pretrain", args=args, workdir=wd, processes=nproc,
                                deps=deps + (ldeps if monitor else []),
                                marker=os.path.join(wd, "encoder", "encoder.json"), info=info))
            inits.append((label, wd, [jid], info))
    for b in grid.baselines:
        inits.append((b, b, [], dict(method=b, init=b)))
    if grid.get("imagenet_weights", ""):
        inits.append(("imagenet", f"imagenet:{os.path.abspath(grid.imagenet_weights)}", [],
                      dict(method="imagenet", init="imagenet")))
    evals: list[Job] = []
    per_protocol = dict(grid.get("protocol_overrides", None) or {})
    fractions = dict(grid.get("protocol_fractions", None) or {})
    shared = ((f"--config.data.feature_cache={os.path.join(sweep_dir, 'features')}",)
              if grid.get("share_features", False) else ())
    for protocol in grid.protocols:
        cfg = _variant(_path(grid.eval_config.format(protocol=protocol)), grid.eval_variant)
        cache = shared if protocol in ("probe", "knn") else ()
        for label, init, deps, info in inits:
            for frac in fractions.get(protocol, grid.fractions):
                for seed in grid.seeds:
                    jid = f"eval/{protocol}/{label}/f{fmt_fraction(frac)}/s{int(seed)}"
                    wd = os.path.join(sweep_dir, jid)
                    args = [protocol, "--config", cfg, "--workdir", wd, f"--config.init={init}",
                            f"--config.fraction={fmt_fraction(frac)}", f"--config.seed={int(seed)}",
                            f"--config.data.store={labelled}", *map(str, grid.eval_overrides),
                            *map(str, per_protocol.get(protocol, ())), *cache]
                    evals.append(Job(id=jid, kind="eval", args=args, workdir=wd, deps=deps + ldeps,
                                     marker=os.path.join(wd, "metrics.json"),
                                     info=dict(info, protocol=protocol, fraction=float(frac), seed=int(seed))))
    return topological(dedupe(data.jobs + pretrain + evals))


def shard_prepare(jobs: list[Job], num_shards: int) -> list[Job]:
    """Each prepare job as ``num_shards`` shard jobs (``--shard I/N``, one stable-hash 1/N of the sources
    each, data_prep/sharding.py) and its merge (``prepare merge``), which keeps the job's id and marker, so
    the jobs needing the store wait for the merge. N <= 1: the jobs as they are."""
    if num_shards <= 1:
        return jobs
    out: list[Job] = []
    for j in jobs:
        if j.kind != "prepare":
            out.append(j)
            continue
        ids = []
        for i in range(num_shards):
            ids.append(f"{j.id}/shard-{i}-of-{num_shards}")
            out.append(Job(id=ids[-1], kind="prepare-shard", args=[*j.args, "--shard", f"{i}/{num_shards}"],
                           marker=os.path.join(j.workdir, "shards", f"shard-{i}-of-{num_shards}.json"),
                           workdir=j.workdir, deps=list(j.deps), info=dict(shard_of=j.id, shard=i, shards=num_shards)))
        out.append(dataclasses.replace(j, args=["prepare", "merge", "--out", j.workdir, "--quiet"], deps=ids))
    return topological(out)


def select(jobs: list[Job], patterns: list[str]) -> list[Job]:
    """Jobs whose id matches any glob pattern, plus everything they depend on."""
    import fnmatch
    if not patterns:
        return jobs
    by_id = {j.id: j for j in jobs}
    keep: set[str] = set()

    def add(jid: str) -> None:
        if jid not in keep:
            keep.add(jid)
            for d in by_id[jid].deps:
                add(d)

    for j in jobs:
        if any(fnmatch.fnmatch(j.id, p) for p in patterns):
            add(j.id)
    return [j for j in jobs if j.id in keep]
