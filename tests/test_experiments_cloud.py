"""Cloud backends of `sweep --emit` / `pretrain --emit`: tpu-vm, k8s (GKE), skypilot; sharded data preparation
in the emitted jobs; and the launch environment -> jax.distributed.initialize arguments of each.

Every emitted file is checked against the tool's own object model or schema, not only parsed:
Kubernetes Jobs and Services deserialize into the official client's V1Job / V1Service models (with unknown
fields refused, as `kubectl apply --validate=strict` does), JobSets validate against JobSet's published CRD
schema, SkyPilot tasks against SkyPilot's task / resources / storage schemas (tests/schemas/, see its README),
and the TPU VM script's gcloud lines against the documented `gcloud compute tpus tpu-vm ssh|scp` flags.
"""
from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from fetal_ssl_jax import configuration
from fetal_ssl_jax.experiments import emit, grid, k8s, remote, skypilot, tpu_vm
from fetal_ssl_jax.experiments.jobs import ROOT
from fetal_ssl_jax.train import mesh

try:  # test-only requirements (requirements-test.txt): the tools' object models and schema validator
    import jsonschema
    import kubernetes
except ImportError:
    jsonschema = kubernetes = None
needs_validators = pytest.mark.skipif(kubernetes is None or jsonschema is None,
                                      reason="test-only requirement: pip install -r requirements-test.txt")

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")
DNS1035 = __import__("re").compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _jobs(tmp_path, processes=2, shards=3, spec="configs/paper_grid.py:tiny"):
    cfg = configuration.load(os.path.join(ROOT, spec), [f"--config.pretrain_processes={processes}"])
    return grid.shard_prepare(grid.expand(cfg, str(tmp_path)), shards)


# ---------------------------------------------------------------- the environment -> initialize arguments

def test_distributed_args_for_each_launch_environment():
    args = mesh.distributed_args
    assert args({}) is None  # one process: no jax.distributed
    assert args({}, "10.0.0.1:1234", 4, 2) == dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2)
    # Kubernetes (our manifests): coordinator = pod 0's DNS name, id from the completion index
    k = {"FETAL_SSL_JAX_COORDINATOR": "j-workers-0-0.j:8476", "FETAL_SSL_JAX_NUM_PROCESSES": "4",
         "FETAL_SSL_JAX_PROCESS_ID": "3", "JOB_COMPLETION_INDEX": "3"}
    assert args(k) == dict(coordinator_address="j-workers-0-0.j:8476", num_processes=4, process_id=3)
    k2 = {"FETAL_SSL_JAX_COORDINATOR": "j-0.j", "FETAL_SSL_JAX_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "1"}
    assert args(k2) == dict(coordinator_address=f"j-0.j:{mesh.COORDINATOR_PORT}", num_processes=2, process_id=1)
    with pytest.raises(RuntimeError):
        args({"FETAL_SSL_JAX_COORDINATOR": "j-0.j", "FETAL_SSL_JAX_NUM_PROCESSES": "2"})
    # a GKE TPU pod also has TPU_WORKER_HOSTNAMES: our variables win (explicit, one slice)
    assert args(dict(k, TPU_WORKER_HOSTNAMES="a,b,c,d", TPU_WORKER_ID="3"))["coordinator_address"] == \
        "j-workers-0-0.j:8476"
    # SkyPilot: SKYPILOT_NODE_IPS (one per line, the head first) and SKYPILOT_NODE_RANK
    sky = {"SKYPILOT_NODE_IPS": "10.1.0.5\n10.1.0.6\n10.1.0.7\n", "SKYPILOT_NODE_RANK": "2", "SKYPILOT_NUM_NODES": "3"}
    assert args(sky) == dict(coordinator_address=f"10.1.0.5:{mesh.COORDINATOR_PORT}", num_processes=3, process_id=2)
    assert args({"SKYPILOT_NODE_IPS": "10.1.0.5\n", "SKYPILOT_NODE_RANK": "0"}) is None  # one node
    # TPU VM pod slice through `gcloud ... ssh --worker=all` (and TPU SkyPilot tasks): JAX's own detection
    assert args({"FETAL_SSL_JAX_DISTRIBUTED": "auto"}) == {}
    assert args(dict(sky, FETAL_SSL_JAX_DISTRIBUTED="auto")) == {}
    # SLURM with several tasks, a GKE TPU pod's own variables: JAX's own detection, as before
    assert args({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == {}
    assert args({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert args({"TPU_WORKER_HOSTNAMES": "a,b", "TPU_WORKER_ID": "1"}) == {}
    assert args({"TPU_WORKER_HOSTNAMES": "a"}) is None


def test_maybe_initialize_distributed_passes_those_arguments_to_jax(monkeypatch):
    calls = []
    monkeypatch.setattr(mesh.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(mesh.maybe_initialize_distributed, "_done", False, raising=False)
    for key in list(os.environ):
        if key.startswith(("SLURM_", "SKYPILOT_", "TPU_", "FETAL_SSL_JAX_", "JOB_COMPLETION")):
            monkeypatch.delenv(key)
    assert mesh.maybe_initialize_distributed() is False and calls == []
    monkeypatch.setenv("SKYPILOT_NODE_IPS", "10.1.0.5\n10.1.0.6")
    monkeypatch.setenv("SKYPILOT_NODE_RANK", "1")
    assert mesh.maybe_initialize_distributed() is True
    assert calls == [dict(coordinator_address=f"10.1.0.5:{mesh.COORDINATOR_PORT}", num_processes=2, process_id=1)]
    assert mesh.maybe_initialize_distributed() is True and len(calls) == 1  # idempotent


# ---------------------------------------------------------------- Kubernetes

_API = None


def _api():
    global _API
    if _API is None:
        _API = kubernetes.client.ApiClient()
    return _API


def _strict(obj, typ: str, where: str = ""):
    """Refuses fields the Kubernetes model does not have (the models themselves ignore them)."""
    if typ.startswith("Optional["):
        return _strict(obj, typ[9:-1], where)
    if typ.lower().startswith("list["):
        assert isinstance(obj, list), where
        for i, x in enumerate(obj):
            _strict(x, typ[5:-1], f"{where}[{i}]")
        return
    if typ.lower().startswith(("dict[", "dict(")):
        assert isinstance(obj, dict), where
        for k, v in obj.items():
            _strict(v, typ[typ.index(",") + 1:-1].strip(), f"{where}.{k}")
        return
    if typ in ("str", "int", "bool", "float", "object", "datetime", "date"):
        if typ == "str":
            assert isinstance(obj, str), f"{where}: {obj!r} is not a string"
        return
    cls = getattr(kubernetes.client.models, typ)
    fields = {v: k for k, v in cls.attribute_map.items()}
    assert isinstance(obj, dict), where
    for k, v in obj.items():
        assert k in fields, f"{where}: {typ} has no field {k!r}"
        _strict(v, cls.openapi_types[fields[k]], f"{where}.{k}")


def k8s_model(obj: dict, typ: str):
    """The object as the official client's model (required fields and enums checked by the model)."""
    _strict(obj, typ, typ)
    return _api()._ApiClient__deserialize(obj, typ)


@functools.lru_cache(maxsize=1)
def _jobset_schema() -> dict:
    with gzip.open(os.path.join(SCHEMAS, "jobset.x-k8s.io_jobsets.yaml.gz"), "rt") as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["group"] == "jobset.x-k8s.io"
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == k8s.JOBSET_API.split("/")[1]]
    return v["schema"]["openAPIV3Schema"]


def _no_unknown_fields(obj, schema, where="JobSet"):
    """What the API server's pruning would drop silently (kubectl --validate=strict refuses it)."""
    if isinstance(obj, dict) and schema.get("type") == "object" and "properties" in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for k, v in obj.items():
            assert k in schema["properties"], f"{where}: unknown field {k!r}"
            _no_unknown_fields(v, schema["properties"][k], f"{where}.{k}")
    elif isinstance(obj, list) and "items" in schema:
        for i, x in enumerate(obj):
            _no_unknown_fields(x, schema["items"], f"{where}[{i}]")


def validate_k8s(doc: dict):
    kind = doc["kind"]
    if kind == "Job":
        assert doc["apiVersion"] == "batch/v1"
        return k8s_model(doc, "V1Job")
    if kind == "Service":
        assert doc["apiVersion"] == "v1"
        return k8s_model(doc, "V1Service")
    assert kind == "JobSet" and doc["apiVersion"] == k8s.JOBSET_API
    schema = _jobset_schema()
    jsonschema.Draft7Validator(schema).validate(doc)
    _no_unknown_fields(doc, schema)
    k8s_model(doc["metadata"], "V1ObjectMeta")
    for rj in doc["spec"]["replicatedJobs"]:
        k8s_model(rj["template"], "V1JobTemplateSpec")
    return doc


def _pod(doc):
    spec = doc["spec"]["replicatedJobs"][0]["template"]["spec"] if doc["kind"] == "JobSet" else doc["spec"]
    return spec, spec["template"]["spec"]


@needs_validators
@pytest.mark.parametrize("multihost", ["jobset", "indexed"])
def test_emit_k8s_manifests_validate_against_kubernetes_models_and_jobset_crd(tmp_path, multihost):
    js = _jobs(tmp_path)
    o = k8s.K8sOptions(workdir="gs://fsj-bucket/paper", multihost=multihost, tpu="tpu-v5-lite-podslice",
                       tpu_topology="2x4", eval_tpu_topology="2x2", tpu_chips_per_host=4)
    paths = k8s.write_k8s(js, str(tmp_path), o, "paper_grid")
    files = [p for p in paths if p.endswith(".yaml")]
    pending = [j for j in js if not j.done()]
    assert len(files) == len(pending) - 2 * 2  # the 3 shards of each of the 2 stores are one Indexed Job
    docs = {}
    for p in files:
        ds = list(yaml.safe_load_all(open(p)))
        for d in ds:
            validate_k8s(d)
            assert DNS1035.match(d["metadata"]["name"]) and len(d["metadata"]["name"]) <= 63
        docs[os.path.basename(p)] = ds
    # the checks do catch mistakes: an unknown JobSet or Job field, a wrong type, a missing required field
    some = next(ds for ds in docs.values() if ds[-1]["kind"] == ("JobSet" if multihost == "jobset" else "Job"))
    bad = json.loads(json.dumps(some[-1]))
    bad["spec"]["replicatedJob" if multihost == "jobset" else "completion"] = 1
    with pytest.raises((AssertionError, jsonschema.ValidationError)):
        validate_k8s(bad)
    bad = json.loads(json.dumps(some[-1]))
    _pod(bad)[1]["containers"][0].pop("name")
    with pytest.raises(Exception):
        validate_k8s(bad)
    by_kind = {}
    for name, ds in docs.items():
        by_kind.setdefault(ds[-1]["metadata"]["labels"]["fetal-ssl-jax/kind"], []).append(ds)
    # multi-process pretraining: coordinator = pod 0's DNS name, process id = completion index, TPU slice
    for ds in by_kind["pretrain"]:
        main = ds[-1]
        name = main["metadata"]["name"]
        if multihost == "jobset":
            assert len(ds) == 1 and main["kind"] == "JobSet"
            coord = f"{name}-workers-0-0.{name}:8476"
        else:
            assert [d["kind"] for d in ds] == ["Service", "Job"]
            svc = ds[0]["spec"]
            assert svc["clusterIP"] == "None" and svc["selector"] == {"batch.kubernetes.io/job-name": name}
            coord = f"{name}-0.{name}:8476"
            assert _pod(main)[1]["subdomain"] == name
        job, pod = _pod(main)
        assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"] == 2
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["FETAL_SSL_JAX_COORDINATOR"]["value"] == coord
        assert env["FETAL_SSL_JAX_NUM_PROCESSES"]["value"] == "2"
        assert env["FETAL_SSL_JAX_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        # what launch.py then does in pod 1 (JOB_COMPLETION_INDEX is set by Kubernetes as well)
        pod_env = {"FETAL_SSL_JAX_COORDINATOR": coord, "FETAL_SSL_JAX_NUM_PROCESSES": "2",
                   "FETAL_SSL_JAX_PROCESS_ID": "1", "JOB_COMPLETION_INDEX": "1"}
        assert mesh.distributed_args(pod_env) == dict(coordinator_address=coord, num_processes=2, process_id=1)
        assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                       "cloud.google.com/gke-tpu-topology": "2x4"}
        assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": "4"}
        line = pod["containers"][0]["command"][2]
        assert "--coordinator" not in line and line.startswith("cd /app && test -e /gcs/fsj-bucket/paper/pretrain/")
        assert "--config configs/" in line and "--config.data.store=/gcs/fsj-bucket/paper/data/frames-main" in line
    # evaluation: ordinary Jobs on a one-host slice
    for (d,) in by_kind["eval"]:
        assert d["kind"] == "Job" and "completions" not in d["spec"]
        assert _pod(d)[1]["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "2x2"
    # data preparation: an Indexed Job of 3 shards, then the merge
    for (d,) in by_kind["prepare-shard"]:
        assert d["spec"]["completions"] == 3 and d["spec"]["completionMode"] == "Indexed"
        line = _pod(d)[1]["containers"][0]["command"][2]
        assert "--shard ${JOB_COMPLETION_INDEX}/3" in line and "shard-${JOB_COMPLETION_INDEX}-of-3.json ||" in line
        assert "nodeSelector" not in _pod(d)[1]  # CPU only
    assert all("launch.py prepare merge --out /gcs/fsj-bucket/paper/data/" in _pod(d)[1]["containers"][0]["command"][2]
               for (d,) in by_kind["prepare"])
    # the GCS FUSE CSI volume for the gs:// workdir
    _, pod = _pod(by_kind["synth"][0][0])
    assert pod["volumes"][0]["csi"] == {"driver": "gcsfuse.csi.storage.gke.io", "volumeAttributes": {
        "bucketName": "fsj-bucket", "mountOptions": "implicit-dirs"}}
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/gcs/fsj-bucket"
    submit = open(paths[-1]).read()
    assert subprocess.run(["bash", "-n", paths[-1]]).returncode == 0
    order = [submit.index(f"submit {'job'} {d[-1]['metadata']['name']} ") for d in
             (by_kind["prepare-shard"][0], by_kind["prepare"][0])]
    assert order == sorted(order)


@needs_validators
def test_emit_k8s_gpu_and_resubmission_skips_finished_jobs(tmp_path):
    js = _jobs(tmp_path, processes=1, shards=1)
    o = k8s.K8sOptions(gpus=2, gpu_type="nvidia-l4")
    first = [p for p in k8s.write_k8s(js, str(tmp_path), o) if p.endswith(".yaml")]
    pre = next(yaml.safe_load(open(p)) for p in first if "pretrain-simclr" in p)
    validate_k8s(pre)
    pod = pre["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"} and "volumes" not in pod
    assert f"--workdir {tmp_path}/pretrain/simclr" in pod["containers"][0]["command"][2]  # same path: no mapping
    for j in js[:3]:  # simulation and both stores finished
        os.makedirs(os.path.dirname(j.marker), exist_ok=True)
        open(j.marker, "w").close()
    import shutil
    shutil.rmtree(tmp_path / "k8s")
    again = [p for p in k8s.write_k8s(js, str(tmp_path), o) if p.endswith(".yaml")]
    assert len(again) == len(first) - 3


def test_k8s_topology_must_match_the_processes(tmp_path):
    js = _jobs(tmp_path, processes=2, shards=1)
    with pytest.raises(ValueError, match="pretrain_processes=4"):
        k8s.write_k8s(js, str(tmp_path), k8s.K8sOptions(tpu="tpu-v5-lite-podslice", tpu_topology="4x4"))


# ---------------------------------------------------------------- SkyPilot

@functools.lru_cache(maxsize=1)
def _sky_validators():
    schemas = json.load(open(os.path.join(SCHEMAS, "skypilot_task.schema.json")))

    def case_insensitive_enum(validator, enums, instance, schema):  # SkyPilot's own keyword
        if isinstance(instance, str) and instance.lower() not in {e.lower() for e in enums}:
            yield jsonschema.ValidationError(f"{instance!r} is not one of {enums} (case-insensitive)")

    out = {}
    for key, schema in schemas.items():
        base = jsonschema.validators.validator_for(schema)
        cls = jsonschema.validators.extend(base, {"case_insensitive_enum": case_insensitive_enum})
        cls.check_schema(schema)
        out[key] = cls(schema)
    return out


def validate_sky(task: dict):
    v = _sky_validators()
    v["task"].validate(task)
    v["resources"].validate(task["resources"])
    for dst, src in task.get("file_mounts", {}).items():
        if isinstance(src, dict):
            v["storage"].validate(src)


@needs_validators
def test_emit_skypilot_tasks_validate_against_skypilot_schema(tmp_path):
    js = _jobs(tmp_path)
    o = skypilot.SkyOptions(accelerators="A100:8", eval_accelerators="L4:1", infra="gcp",
                            workdir="gs://fsj-bucket/paper")
    paths = skypilot.write_skypilot(js, str(tmp_path), o, "paper_grid")
    tasks = {}
    for p in paths[:-1]:
        t = yaml.safe_load(open(p))
        validate_sky(t)
        tasks[t["name"]] = t
    with pytest.raises(jsonschema.ValidationError):  # the schema does catch mistakes
        validate_sky(dict(next(iter(tasks.values())), nodes=2))
    pre = tasks["paper-grid-pretrain-simclr"]
    assert pre["num_nodes"] == 2 and pre["resources"] == {"accelerators": "A100:8", "infra": "gcp"}
    assert pre["workdir"] == ROOT and "make venv PLATFORM=cuda" in pre["setup"]
    assert pre["run"].startswith("cd ~/sky_workdir && test -e /gcs/fsj-bucket/paper/pretrain/simclr/encoder/")
    assert "--coordinator" not in pre["run"]
    assert pre["file_mounts"] == {"/gcs/fsj-bucket": {"source": "gs://fsj-bucket", "mode": "MOUNT"}}
    # what launch.py does on node 1 of that task
    assert mesh.distributed_args({"SKYPILOT_NODE_IPS": "10.0.0.2\n10.0.0.3", "SKYPILOT_NODE_RANK": "1"}) == \
        dict(coordinator_address="10.0.0.2:8476", num_processes=2, process_id=1)
    ev = tasks["paper-grid-eval-probe-simclr-f10-s0"]
    assert ev["num_nodes"] == 1 and ev["resources"]["accelerators"] == "L4:1"
    shards = tasks["paper-grid-data-frames-main-shards"]
    assert shards["num_nodes"] == 3 and "--shard ${SKYPILOT_NODE_RANK}/3" in shards["run"]
    assert shards["resources"] == {"cpus": "8+", "infra": "gcp"}
    assert "launch.py prepare merge" in tasks["paper-grid-data-frames-main"]["run"]
    assert subprocess.run(["bash", "-n", paths[-1]]).returncode == 0
    # a TPU pod slice is one SkyPilot node; JAX finds its workers
    o2 = skypilot.SkyOptions(accelerators="tpu-v5e-16", eval_accelerators="tpu-v5e-4")
    t = skypilot.task(next(j for j in js if j.kind == "pretrain"), 1, remote.Remote(str(tmp_path)), o2, "g")
    validate_sky(t)
    assert t["num_nodes"] == 1 and t["envs"]["FETAL_SSL_JAX_DISTRIBUTED"] == "auto" and "make venv PLATFORM=tpu" in t["setup"]


# ---------------------------------------------------------------- TPU VM

def _gcloud_tpu_vm_parser() -> argparse.ArgumentParser:
    """`gcloud compute tpus tpu-vm ssh|scp` as documented (cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm)."""
    p = argparse.ArgumentParser(prog="gcloud compute tpus tpu-vm", exit_on_error=False)
    sub = p.add_subparsers(dest="verb", required=True)
    ssh = sub.add_parser("ssh", exit_on_error=False)
    ssh.add_argument("tpu")
    scp = sub.add_parser("scp", exit_on_error=False)
    scp.add_argument("paths", nargs="+")  # SRC... DEST
    scp.add_argument("--recurse", action="store_true")
    for q in (ssh, scp):
        q.add_argument("--zone", required=True)
        q.add_argument("--project")
        q.add_argument("--worker")
    ssh.add_argument("--command")
    return p


def test_emit_tpu_vm_script_is_valid_gcloud_and_bash(tmp_path):
    js = _jobs(tmp_path)
    (path,) = tpu_vm.write_tpu_vm(js, str(tmp_path), tpu_vm.TpuVmOptions(tpu="v5e-pod", zone="us-west4-a",
                                                                           workdir="gs://fsj-bucket/paper"))
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    parser = _gcloud_tpu_vm_parser()
    calls = []
    for line in open(path).read().splitlines():
        if line.startswith("gcloud "):
            words = shlex.split(line.rstrip(" &"))
            assert words[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
            a = parser.parse_args(words[4:])
            assert a.zone == "us-west4-a"
            assert a.worker == "all" or a.worker.isdigit()
            if a.verb == "ssh":
                assert a.tpu == "v5e-pod"
                assert subprocess.run(["bash", "-n", "-c", a.command]).returncode == 0
            else:
                assert a.paths[-1].startswith("v5e-pod:")
            calls.append(a)
    assert calls[0].verb == "scp" and calls[1].verb == "ssh" and "make venv PLATFORM=tpu" in calls[1].command
    assert "gcsfuse --implicit-dirs fsj-bucket /gcs/fsj-bucket" in calls[2].command
    pre = [c for c in calls if c.verb == "ssh" and "launch.py pretrain" in (getattr(c, "command", None) or "")]
    assert len(pre) == 2 and all(c.worker == "all" and "export FETAL_SSL_JAX_DISTRIBUTED=auto" in c.command
                                 for c in pre)
    assert all(c.worker == "0" for c in calls if " launch.py probe " in (getattr(c, "command", None) or ""))
    shards = [c for c in calls if "--shard" in (getattr(c, "command", None) or "") and "prepare frames" in c.command]
    assert [c.worker for c in shards] == ["0", "1"] and "--shard 2/3" in shards[0].command  # shard i on i % hosts


# ---------------------------------------------------------------- SLURM and the CLI

def test_emit_slurm_prepares_data_as_an_array_job_then_merges(tmp_path):
    js = _jobs(tmp_path, processes=1, shards=4)
    emit.write_slurm(js, str(tmp_path), emit.SlurmOptions(gpus_per_node=0))
    sd = tmp_path / "slurm"
    lines = open(sd / "stage1_prepare-shard.txt").read().splitlines()
    assert len(lines) == 2 * 4 and "#SBATCH --array=0-7" in open(sd / "stage1_prepare-shard.sbatch").read()
    assert sorted(line.split("--shard ")[1].split()[0] for line in lines) == sorted(["0/4", "1/4", "2/4", "3/4"] * 2)
    merges = open(sd / "stage2_prepare.txt").read().splitlines()
    assert len(merges) == 2 and all("launch.py prepare merge --out" in m for m in merges)
    submit = open(sd / "submit.sh").read()
    assert submit.index("stage1_prepare-shard") < submit.index("stage2_prepare.sbatch") < \
        submit.index("stage3_pretrain")


@needs_validators
def test_sweep_and_pretrain_cli_emit(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "sweep", "--grid", "configs/paper_grid.py:tiny",
                        "--workdir", str(tmp_path / "s"), "--emit", "skypilot", "--prepare-shards", "2",
                        "--sky-accelerators", "L4:1", "--only", "pretrain/simclr"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(tmp_path / "s" / "skypilot"))
    assert names == ["000-paper-grid-data-synth-main.yaml", "001-paper-grid-data-frames-main-shards.yaml",
                     "002-paper-grid-data-frames-main.yaml", "003-paper-grid-pretrain-simclr.yaml", "submit.sh"]
    for n in names[:-1]:
        validate_sky(yaml.safe_load(open(tmp_path / "s" / "skypilot" / n)))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "pretrain", "--config",
                        "configs/barlowtwins.py:tiny", "--workdir", str(tmp_path / "bt"), "--emit", "k8s",
                        "--num-processes", "2", "--k8s-multihost", "indexed", "--k8s-gpus", "1",
                        "--config.data.store=gs://fsj-b/frames"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    (f,) = [n for n in os.listdir(tmp_path / "bt" / "k8s") if n.endswith(".yaml")]
    svc, job = yaml.safe_load_all(open(tmp_path / "bt" / "k8s" / f))
    validate_k8s(svc)
    validate_k8s(job)
    assert job["spec"]["completions"] == 2
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "--config.data.store=/gcs/fsj-b/frames" in cmd and "--config configs/barlowtwins.py:tiny" in cmd
