"""Full fine-tune end to end on the simulator's tiny preset, through launch.py: above chance, selection, encoder."""
import json
import os

import numpy as np

from engine_helpers import run_launch
from fetal_ssl_jax.evaluate import metrics


def _chance_macro_f1(y: np.ndarray, k: int = 5, trials: int = 200) -> float:
    """Expected macro-F1 of guessing uniformly at random on these labels."""
    rng = np.random.default_rng(0)
    return float(np.mean([metrics.macro_f1(y, rng.integers(0, k, len(y)), k) for _ in range(trials)]))


def test_finetune_tiny_beats_chance(tmp_path):
    """On one CPU device, as a laptop user runs it (the suite's in-process tests see 4 fake devices, on which
    each of the ~200 steps runs ~2x slower; devices are not what this test is about). One uninterrupted run:
    resuming a fine-tune (preempted, killed, out of space) and ending bit for bit where the uninterrupted run
    ends is test_reliability.py's fault test."""
    work = str(tmp_path / "ft")
    run = run_launch(["finetune", "--config", "configs/finetune.py:tiny", "--workdir", work, "--config.init=random",
                      "--config.fraction=100", "--config.seed=0"], devices=1)
    assert "test macro-F1" in run.stdout
    m = json.load(open(os.path.join(work, "metrics.json")))
    steps = [json.loads(line)["step"] for line in open(os.path.join(work, "metrics.jsonl"))]
    assert steps[-1] == m["steps"] and steps == sorted(set(steps))  # every logged step once, to the end

    # selection on validation macro-F1; the test block is from that one model
    hist = {int(s): f for s, f in m["val_history"].items()}
    assert m["selected_step"] == min(s for s, f in hist.items() if f == max(hist.values()))
    assert abs(m["val"]["macro_f1"] - max(hist.values())) < 1e-6

    y_test = np.repeat(np.arange(5), np.sum(m["test"]["confusion_matrix"], axis=1))
    chance = _chance_macro_f1(y_test)
    print(f"\ntiny fine-tune: test macro-F1 {m['test']['macro_f1']:.3f} (chance {chance:.3f}), "
          f"val {m['val']['macro_f1']:.3f}, n_test {len(y_test)}, step {m['selected_step']}/{m['steps']}")
    assert m["test"]["macro_f1"] > max(0.3, chance + 0.1)

    # the selected network is saved as an encoder (with its classifier) that other protocols can start from
    from configs import probe as probe_cfg
    from fetal_ssl_jax.evaluate import init as init_lib
    meta = json.load(open(os.path.join(work, "encoder", "encoder.json")))
    assert meta["classes"] == m["classes"] and meta["selected_step"] == m["selected_step"]
    cfg = probe_cfg.get_config("tiny")
    cfg.init = work
    init = init_lib.resolve(cfg)
    assert init.method == "supervised" and "fc" not in init.variables["params"]


def test_step_count_has_a_floor_and_validation_cadence_a_cap():
    from fetal_ssl_jax.evaluate import defaults
    from fetal_ssl_jax.evaluate.finetune import eval_interval, num_steps
    cfg = defaults.apply_variant(defaults.eval_base("finetune"), "cpu")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.min_steps, cfg.train.max_evals) == (30, 64, 100, 25)
    # 1% of the demo store: 13 images would be ceil(30 * 13 / 64) = 7 steps by epochs alone.
    assert num_steps(cfg, 13) == 100
    assert eval_interval(cfg, 13, 100) == 4        # once per "epoch" would be 100 validations
    # 10%: 137 images are 65 steps by epochs, still under the floor; once per epoch (3 steps) is over the cap.
    assert num_steps(cfg, 137) == 100
    assert eval_interval(cfg, 137, 100) == 4
    # 100%: 1370 images, 643 steps; per-epoch validation (22 steps) -> ceil(643 / 25) = 26.
    assert num_steps(cfg, 1370) == 643
    assert eval_interval(cfg, 1370, 643) == 26
    cfg.train.update(steps=7, eval_every=2)        # explicit values win
    assert num_steps(cfg, 13) == 7 and eval_interval(cfg, 13, 7) == 2
    cfg.train.update(steps=0, eval_every=0, min_steps=0, max_evals=0)
    assert num_steps(cfg, 13) == 7 and eval_interval(cfg, 13, 7) == 1
