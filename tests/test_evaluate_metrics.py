"""Evaluation maths: metrics vs scikit-learn, class weights and nested fractions, kNN votes."""
import numpy as np
import pytest

from fetal_ssl_jax.evaluate import metrics
from fetal_ssl_jax.evaluate.knn import knn_predict

CLASSES = ["4CH", "LVOT", "RVOT", "3VV", "3VT"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from fetal_ssl_jax import phantom
    from fetal_ssl_jax.data.synthetic_store import simulate_store
    root = str(tmp_path_factory.mktemp("labelled"))
    phantom.generate(root + "/export", preset="tiny", seed=0, images=150, labelled_patients=12)
    return simulate_store(root, size=32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    from sklearn import metrics as skm  # here, not at the top: importing sklearn costs ~1.3 s in each worker
    rng = np.random.default_rng(seed)
    y = rng.choice(5, 200, p=[0.4, 0.2, 0.2, 0.15, 0.05])
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))
    if seed == 2:  # a class absent from both truth and predictions (small test splits)
        y, pred = np.where(y == 4, 0, y), np.where(pred == 4, 1, pred)
    m = metrics.summarize(y, pred, CLASSES)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(5)).tolist()
    per = skm.f1_score(y, pred, average=None, labels=range(5), zero_division=0)
    for i, c in enumerate(CLASSES):
        if seed == 2 and c == "3VT":
            assert m["per_class_f1"][c] is None
        else:
            assert m["per_class_f1"][c] == pytest.approx(per[i], abs=1e-12)
    assert metrics.macro_f1(y, pred, 5) == pytest.approx(m["macro_f1"], abs=1e-12)


def test_class_weights_are_sklearn_balanced_on_present_classes():
    from sklearn.utils.class_weight import compute_class_weight
    y = np.array([0] * 10 + [1] * 3 + [3] * 2)
    w = metrics.class_weights(y, 5)
    present = np.unique(y)
    np.testing.assert_allclose(w[present], compute_class_weight("balanced", classes=present, y=y), rtol=1e-6)
    assert w[2] == 0 and w[4] == 0


def test_fractions_nested_and_weights_from_the_subset(tiny_store):
    import ml_collections
    from fetal_ssl_jax.data.labelled_store import LabelledStore
    from fetal_ssl_jax.evaluate import finetune, init as init_lib, labelled_data
    from configs import finetune as finetune_cfg

    store = LabelledStore.open(tiny_store)
    full_labels = labelled_data.split_labels(store, "train")
    subsets = {}
    for f in (1, 10, 100):
        cfg = ml_collections.ConfigDict(dict(fraction=f, seed=1, fraction_seed=-1))
        subsets[f] = labelled_data.train_subset(store, cfg)
    assert set(subsets[1].indices) <= set(subsets[10].indices) <= set(subsets[100].indices)
    assert len(subsets[1].indices) < len(subsets[100].indices) == len(full_labels)
    present = set(full_labels.tolist())
    for s in subsets.values():
        assert set(s.labels.tolist()) == present  # >= 1 image per class
        np.testing.assert_array_equal(s.labels, full_labels[s.indices])
    w_sub, w_full = (metrics.class_weights(subsets[f].labels, 5) for f in (1, 100))
    assert not np.allclose(w_sub, w_full)
    # the fine-tune's method config carries the weights of the subset it trains on
    cfg = finetune_cfg.get_config("tiny")
    rc = finetune.run_config(cfg, init_lib.resolve(cfg), 5, w_sub, 10)
    np.testing.assert_allclose(rc.supervised.class_weights, w_sub)


def test_knn_on_separable_clusters_and_temperature_weighting():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 5
    bank = np.concatenate([c + rng.normal(size=(30, 16)) for c in centers]).astype(np.float32)
    labels = np.repeat(np.arange(3), 30)
    queries = np.concatenate([c + rng.normal(size=(10, 16)) for c in centers]).astype(np.float32)
    pred = knn_predict(bank, labels, queries, 3, k=20, temperature=0.07)
    np.testing.assert_array_equal(pred, np.repeat(np.arange(3), 10))
    # one near neighbour of class 0 outweighs two far ones of class 1 (unweighted majority would say 1)
    bank2 = np.array([[1.0, 0.0], [0.5, 0.866], [0.5, -0.866]], np.float32)
    assert knn_predict(bank2, np.array([0, 1, 1]), np.array([[1.0, 0.0]], np.float32), 2, k=3)[0] == 0
    assert knn_predict(bank2, np.array([0, 1, 1]), np.array([[1.0, 0.0]], np.float32), 2, k=3,
                       temperature=100.0)[0] == 1
