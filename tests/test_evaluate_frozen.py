"""Frozen-encoder protocols end to end (linear probe, kNN) and the three initialisations."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import launch
from fetal_ssl_jax.models import build_backbone, initialise
from fetal_ssl_jax.train import encoder_io

TINY = dict(arch="resnet18", width=0.125, small_stem=True, zero_init_residual=False, dtype="float32")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from fetal_ssl_jax import phantom
    from fetal_ssl_jax.data.synthetic_store import simulate_store
    root = str(tmp_path_factory.mktemp("labelled"))
    phantom.generate(root + "/export", preset="tiny", seed=0, images=150, labelled_patients=12)
    return simulate_store(root, size=32)


def _random_variables(seed=0):
    """A tiny backbone with non-trivial BN running statistics (as after pretraining)."""
    model = build_backbone(ml_collections.ConfigDict(TINY))
    v = initialise.init_module(model, jax.random.key(seed), jnp.zeros((1, 32, 32, 1)), train=False)
    rng = np.random.default_rng(seed)
    stats = jax.tree.map(lambda a: np.asarray(a) + rng.uniform(0.1, 0.5, a.shape).astype(np.float32),
                         v["batch_stats"])
    return {"params": jax.tree.map(np.asarray, v["params"]), "batch_stats": stats}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ssl") / "encoder")
    meta = dict(method="barlowtwins", step=6, image_size=32, in_channels=1, normalize=dict(mean=0.5, std=0.25),
                config_hash="abc123", code_version="test")
    encoder_io.save_encoder(path, _random_variables(), ml_collections.ConfigDict(TINY), meta)
    return path


def _launch(*args):
    assert launch.main(list(args)) == 0


def test_probe_keeps_the_encoder_bit_identical_and_uses_running_stats(tiny_store, encoder, tmp_path):
    from configs import probe as probe_cfg
    from fetal_ssl_jax.evaluate import features, init as init_lib, labelled_data
    _, original, _ = encoder_io.load_encoder(encoder)
    cfg = probe_cfg.get_config("tiny")
    cfg.update(init=encoder)
    cfg.data.store = tiny_store
    init = init_lib.resolve(cfg)
    store = labelled_data.open_store(cfg, str(tmp_path))
    subset = labelled_data.train_subset(store, cfg)
    feats, used = features.encoder_features(cfg, str(tmp_path), store, init, subset)
    for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(used), strict=True):
        assert np.array_equal(a, b)
    # the features are the eval-mode (running-statistics) forward, not batch statistics
    model = build_backbone(init.model_cfg)
    x, _ = store.load_split("test")
    xn = (x[..., None] / 255.0 - 0.5) / 0.25
    # jitted (op by op, the two forwards compiled ~120 single ops)
    eval_mode = jax.jit(lambda v, x: model.apply(v, x, train=False))(used, xn)
    np.testing.assert_allclose(feats["test"][0], eval_mode, rtol=1e-5, atol=1e-5)
    train_mode, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(used, xn)
    assert not np.allclose(feats["test"][0], train_mode, atol=1e-3)

    work = str(tmp_path / "probe")
    _launch("probe", "--config", "configs/probe.py:tiny", "--workdir", work, f"--config.init={encoder}",
            f"--config.data.store={tiny_store}", "--config.fraction=10", "--config.seed=1")
    _, after, _ = encoder_io.load_encoder(encoder)
    for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(after), strict=True):
        assert np.array_equal(a, b)
    m = json.load(open(os.path.join(work, "metrics.json")))
    assert (m["protocol"], m["init_method"], m["fraction"], m["seed"]) == ("probe", "barlowtwins", 10.0, 1)
    assert m["init"]["encoder_config_hash"] == "abc123" and m["config_hash"] and m["code_version"]
    for split in ("val", "test"):
        assert set(m[split]) >= {"macro_f1", "accuracy", "balanced_accuracy", "per_class_f1", "confusion_matrix"}
        assert list(m[split]["per_class_f1"]) == ["4CH", "LVOT", "RVOT", "3VV", "3VT"]
        assert np.sum(m[split]["confusion_matrix"]) == m[split]["num_samples"]
    assert 1 <= m["selected_epoch"] <= m["epochs"] and len(m["val_history"]) == m["epochs"]
    assert m["num_train"] == len(labelled_data.train_subset(store, ml_collections.ConfigDict(
        dict(fraction=10, seed=1, fraction_seed=-1))).indices)
    assert os.path.getsize(os.path.join(work, "confusion_matrix.png")) > 1000
    assert os.path.exists(os.path.join(work, "features", "train.npz"))
    # a finished workdir is not rerun
    stamp = os.path.getmtime(os.path.join(work, "metrics.json"))
    _launch("probe", "--config", "configs/probe.py:tiny", "--workdir", work, f"--config.init={encoder}",
            f"--config.data.store={tiny_store}", "--config.fraction=10", "--config.seed=1")
    assert os.path.getmtime(os.path.join(work, "metrics.json")) == stamp
    assert launch.main(["probe", "--config", "configs/probe.py:tiny", "--workdir", work,
                        f"--config.data.store={tiny_store}"]) == 2  # other config, same workdir: refused


def test_knn_cli(tiny_store, encoder, tmp_path):
    _launch("knn", "--config", "configs/knn.py:tiny", "--workdir", str(tmp_path), f"--config.init={encoder}",
            f"--config.data.store={tiny_store}")
    m = json.load(open(tmp_path / "metrics.json"))
    assert m["protocol"] == "knn" and m["k"] == 20 and m["temperature"] == 0.07
    assert 0.0 <= m["test"]["macro_f1"] <= 1.0
    assert launch.main(["knn", "--config", "configs/probe.py:tiny", "--workdir", str(tmp_path / "x")]) == 2


def test_imagenet_init_from_torchvision_safetensors(tiny_store, tmp_path):
    from safetensors.numpy import save_file
    from configs import probe as probe_cfg
    from fetal_ssl_jax.evaluate import init as init_lib
    from fetal_ssl_jax.models import torchvision_convert as tc
    ours = _random_variables(seed=3)
    sd = tc.to_torchvision(ours)
    gray = sd["conv1.weight"]
    sd["conv1.weight"] = np.repeat(gray / 3.0, 3, axis=1)  # an RGB stem, as ImageNet weights have
    sd["fc.weight"] = np.zeros((1000, gray.shape[0] * 8), np.float32)  # ImageNet classifier: dropped
    sd["fc.bias"] = np.zeros((1000,), np.float32)
    path = str(tmp_path / "resnet18_imagenet.safetensors")
    save_file(sd, path)

    cfg = probe_cfg.get_config("tiny")
    cfg.update(init=f"imagenet:{path}")
    init = init_lib.resolve(cfg)
    assert (init.kind, init.model_cfg.arch, init.model_cfg.width, init.model_cfg.small_stem) == \
        ("imagenet", "resnet18", 0.125, True)
    assert (init.mean, init.std) == (0.449, 0.226)
    ref = jax.eval_shape(lambda: build_backbone(init.model_cfg).init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)),
                                                                      train=False))
    init_lib.check_fits(init.variables, ref)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(init.variables), strict=True):  # 'sum' folds the stem back
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    work = str(tmp_path / "probe")
    _launch("probe", "--config", "configs/probe.py:tiny", "--workdir", work, f"--config.init=imagenet:{path}",
            f"--config.data.store={tiny_store}")
    assert json.load(open(os.path.join(work, "metrics.json")))["init_method"] == "imagenet"


def test_export_to_torchvision_safetensors(encoder, tmp_path):
    from fetal_ssl_jax.evaluate.export import export_torchvision
    from fetal_ssl_jax.models import torchvision_convert as tc
    out = str(tmp_path / "enc.safetensors")
    meta = export_torchvision(encoder, out, rgb=True)
    assert meta["warnings"]  # tiny: small stem and width differ from torchvision's
    sd = tc.load_state_dict(out)
    assert sd["conv1.weight"].shape[1] == 3 and "layer4.1.bn2.running_var" in sd
    back = tc.from_torchvision(sd, in_channels=1, reduce="sum")
    _, original, _ = encoder_io.load_encoder(encoder)
    for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(back), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_finetune_starts_from_the_ssl_encoder(tiny_store, encoder, tmp_path):
    """Two near-zero-LR steps: the selected network's conv/BN params are the encoder's (init loaded)."""
    work = str(tmp_path / "ft")
    _launch("finetune", "--config", "configs/finetune.py:tiny", "--workdir", work, f"--config.init={encoder}",
            f"--config.data.store={tiny_store}", "--config.train.steps=2", "--config.train.eval_every=1",
            "--config.optim.base_lr=1e-9")
    _, original, _ = encoder_io.load_encoder(encoder)
    _, tuned, meta = encoder_io.load_encoder(work)
    assert "fc" in tuned["params"] and meta["init"]["method"] == "barlowtwins"
    tuned_enc = {k: v for k, v in tuned["params"].items() if k != "fc"}
    for a, b in zip(jax.tree.leaves(original["params"]), jax.tree.leaves(tuned_enc), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    m = json.load(open(os.path.join(work, "metrics.json")))
    assert m["init_method"] == "barlowtwins" and m["steps"] == 2
