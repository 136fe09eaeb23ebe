#!/usr/bin/env python
"""Difficulty calibration of the simulator, printed as JSON (macro-F1 on unseen patients).

    python benchmarks/phantom_difficulty.py [--train-patients 40 --test-patients 16 --per-patient 30 --size 64]
                                            [--steps 2000 --lr 3e-3 --width 0.25 --aug crop --cache DIR]

1. logistic regression on 32x32 downsampled raw pixels, 100% labels (the "no features" floor);
2. a supervised small ResNet-18 (fetal_ssl_jax.models.resnet, width 0.25; a small Flax CNN
   if that module is missing) from random init with 100% and with 1% of the labels
   (stratified, >= 1 per class; steps/3 steps), weighted cross-entropy from the subset
   actually used, AdamW with warmup + cosine decay, augmentation = horizontal flip + random
   resized crop (area 0.6-1, aspect 1/1.2-1.2) on the fly.

Train and test patients are disjoint. --cache stores the generated splits keyed by a hash
of the simulator's source, so training variants reuse them. Progress goes to stderr.

Goal: CNN@100% >= 0.9, pixels far below, CNN@1% far from CNN@100% (the room for SSL).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from fetal_ssl_jax import phantom  # noqa: E402
from fetal_ssl_jax.phantom.presets import CLASS_FREQUENCIES  # noqa: E402


def _source_hash() -> str:
    import hashlib
    d = os.path.dirname(phantom.__file__)
    h = hashlib.sha1()
    for n in sorted(os.listdir(d)):
        if n.endswith(".py"):
            with open(os.path.join(d, n), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:12]


def make_split(n_patients: int, per_patient: int, size: int, seed: int, offset: int, cache: str | None = None, **kw):
    n = n_patients * per_patient
    counts = np.maximum(1, np.round(np.asarray(CLASS_FREQUENCIES) * n)).astype(int)
    path = None
    if cache:
        os.makedirs(cache, exist_ok=True)
        path = os.path.join(cache, f"split_{_source_hash()}_{n_patients}_{per_patient}_{size}_{seed}_{offset}.npz")
        if os.path.exists(path):
            z = np.load(path)
            return z["x"], z["y"], z["p"]
    x, y, p = phantom.labelled_images(counts.tolist(), size=size, seed=seed, num_patients=n_patients,
                                      patient_offset=offset, **kw)
    if path:
        np.savez(path, x=x, y=y, p=p)
    return x, y, p


def macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import f1_score
    return float(f1_score(y, p, average="macro", labels=list(range(len(phantom.CLASSES)))))


def pixel_baseline(xtr, ytr, xte, yte) -> float:
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def small(x):
        return np.stack([np.asarray(Image.fromarray(i).resize((32, 32), Image.BILINEAR), np.float32) for i in x]).reshape(len(x), -1)

    sc = StandardScaler().fit(small(xtr))
    clf = LogisticRegression(max_iter=300, C=0.05, class_weight="balanced")
    clf.fit(sc.transform(small(xtr)), ytr)
    return macro_f1(yte, clf.predict(sc.transform(small(xte))))


def subset(y: np.ndarray, frac: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = []
    for c in range(len(phantom.CLASSES)):
        members = np.flatnonzero(y == c)
        k = max(1, int(round(frac * members.size)))
        idx.extend(rng.choice(members, k, replace=False).tolist())
    return np.sort(np.asarray(idx))


def make_model(width: float = 0.25, small_stem: bool = False):
    try:
        import ml_collections
        from fetal_ssl_jax.models.resnet import build_backbone
        cfg = ml_collections.ConfigDict(dict(arch="resnet18", width=width, small_stem=small_stem))
        return (build_backbone(cfg, num_classes=len(phantom.CLASSES)),
                f"resnet18(width={width}{', small_stem' if small_stem else ''})")
    except Exception:  # the models package may not exist yet
        import flax.linen as nn
        import jax.numpy as jnp

        class SmallCNN(nn.Module):
            @nn.compact
            def __call__(self, x, train: bool):
                for c in (16, 32, 64, 128):
                    x = nn.Conv(c, (3, 3), strides=2)(x)
                    x = nn.BatchNorm(use_running_average=not train)(x)
                    x = nn.relu(x)
                x = jnp.mean(x, axis=(1, 2))
                return nn.Dense(len(phantom.CLASSES))(x)

        return SmallCNN(), "small_cnn"


def random_resized_crop(key, x, min_area: float = 0.6, max_ratio: float = 1.2):
    """Per-image random crop (area fraction min_area..1, aspect 1/max_ratio..max_ratio) resized back, bilinear."""
    import jax
    import jax.numpy as jnp
    n, h, w, _ = x.shape
    k1, k2, k3, k4 = jax.random.split(key, 4)
    area = jax.random.uniform(k1, (n,), minval=min_area, maxval=1.0)
    logr = jax.random.uniform(k2, (n,), minval=-jnp.log(max_ratio), maxval=jnp.log(max_ratio))
    ch = jnp.clip(jnp.sqrt(area / jnp.exp(logr)), 0.3, 1.0) * h
    cw = jnp.clip(jnp.sqrt(area * jnp.exp(logr)), 0.3, 1.0) * w
    y0 = jax.random.uniform(k3, (n,)) * (h - ch)
    x0 = jax.random.uniform(k4, (n,)) * (w - cw)
    scale = jnp.stack([h / ch, w / cw], -1)
    trans = -jnp.stack([y0, x0], -1) * scale

    def one(img, sc, tr):
        return jax.image.scale_and_translate(img, img.shape, (0, 1), sc, tr, method="linear", antialias=True)

    return jax.vmap(one)(x, scale, trans)


def train_cnn(xtr, ytr, xte, yte, steps: int, batch: int, seed: int, report: dict | None = None,
              lr: float = 3e-3, width: float = 0.25, small_stem: bool = False, aug: str = "crop") -> float:
    import jax
    import jax.numpy as jnp
    import optax

    model, _ = make_model(width, small_stem)
    x0 = jnp.zeros((1, *xtr.shape[1:], 1), jnp.float32)
    var = model.init(jax.random.PRNGKey(seed), x0, train=False)
    params, bstats = var["params"], var.get("batch_stats", {})
    counts = np.bincount(ytr, minlength=len(phantom.CLASSES)).astype(np.float32)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(counts), 0.0).astype(np.float32)
    cw = jnp.asarray(w)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps)
    tx = optax.adamw(sched, weight_decay=1e-4)
    opt = tx.init(params)

    def prep(x):
        return (jnp.asarray(x, jnp.float32)[..., None] - 60.0) / 60.0

    @jax.jit
    def step(params, bstats, opt, x, y, key):
        k1, k2 = jax.random.split(key)
        x = prep(x)
        x = jnp.where(jax.random.bernoulli(k1, 0.5, (x.shape[0], 1, 1, 1)), x[:, :, ::-1], x)
        if aug == "crop":
            x = random_resized_crop(k2, x)
        else:
            shift = jax.random.randint(k2, (2,), -4, 5)
            x = jnp.roll(x, (shift[0], shift[1]), axis=(1, 2))

        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": bstats}, x, train=True, mutable=["batch_stats"])
            ll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            wy = cw[y]
            return jnp.sum(ll * wy) / jnp.sum(wy), upd["batch_stats"]

        (loss, nb), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), nb, opt, loss

    @jax.jit
    def predict(params, bstats, x):
        return jnp.argmax(model.apply({"params": params, "batch_stats": bstats}, prep(x), train=False), -1)

    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    b = min(batch, len(ytr))
    t0 = time.perf_counter()
    for it in range(steps):
        if it and it % 500 == 0:
            print(f"  step {it}/{steps} {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        idx = rng.choice(len(ytr), b, replace=len(ytr) < b)
        key, sk = jax.random.split(key)
        params, bstats, opt, _ = step(params, bstats, opt, xtr[idx], ytr[idx], sk)
    pred = np.concatenate([np.asarray(predict(params, bstats, xte[i:i + 128])) for i in range(0, len(xte), 128)])
    if report is not None:
        from sklearn.metrics import confusion_matrix
        ptr = np.concatenate([np.asarray(predict(params, bstats, xtr[i:i + 128])) for i in range(0, len(xtr), 128)])
        report["train_acc"] = round(float(np.mean(ptr == ytr)), 3)
        report["confusion_test"] = confusion_matrix(yte, pred, labels=list(range(len(phantom.CLASSES)))).tolist()
    return macro_f1(yte, pred)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-patients", type=int, default=40)
    ap.add_argument("--test-patients", type=int, default=16)
    ap.add_argument("--per-patient", type=int, default=30)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--small-stem", action="store_true")
    ap.add_argument("--aug", choices=("crop", "shift"), default="crop",
                    help="crop: random resized crop + flip; shift: roll by <= 4 px + flip")
    ap.add_argument("--skip-cnn", action="store_true")
    ap.add_argument("--skip-1pct", action="store_true")
    ap.add_argument("--cache", default=None, help="folder caching the generated splits (keyed by simulator source)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    xtr, ytr, _ = make_split(a.train_patients, a.per_patient, a.size, a.seed, 20_000, a.cache)
    xte, yte, _ = make_split(a.test_patients, a.per_patient, a.size, a.seed, 30_000, a.cache)
    gen_s = time.perf_counter() - t0
    res = {"train_images": int(len(ytr)), "test_images": int(len(yte)), "size": a.size,
           "generate_s": round(gen_s, 1)}
    res["pixels_logreg_100"] = round(pixel_baseline(xtr, ytr, xte, yte), 3)
    if not a.skip_cnn:
        res["cnn"] = make_model(a.width, a.small_stem)[1]
        res.update(steps=a.steps, lr=a.lr, aug=a.aug)
        kw = dict(lr=a.lr, width=a.width, small_stem=a.small_stem, aug=a.aug)
        t = time.perf_counter()
        rep: dict = {}
        res["cnn_100"] = round(train_cnn(xtr, ytr, xte, yte, a.steps, a.batch, a.seed, rep, **kw), 3)
        res["cnn_100_detail"] = rep
        if not a.skip_1pct:
            sub = subset(ytr, 0.01, a.seed)
            res["n_1pct"] = int(sub.size)
            res["cnn_1"] = round(train_cnn(xtr[sub], ytr[sub], xte, yte, a.steps // 3, a.batch, a.seed, **kw), 3)
        res["cnn_s"] = round(time.perf_counter() - t, 1)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
