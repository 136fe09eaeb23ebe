"""Downstream evaluation: linear probe, full fine-tune, kNN; metrics.

The protocol (configs/probe.py, finetune.py, knn.py): patient-level train/val/test splits and
nested 1/10/100% label fractions saved in the labelled store, class weights from the subset
trained on, model selection on validation macro-F1, the test split scored once.

    cli.py            launch.py probe | finetune | knn
    init.py           random | SSL encoder | imagenet:<torchvision state dict>
    labelled_data.py  the store (or a simulated one), the label subset, eval splits
    features.py       jitted, sharded frozen forward + feature cache; frozen_features() opens probe and kNN
    linear_probe.py / finetune.py / knn.py   the protocols (fine-tuning's grain batches: data/labelled_pipeline.py)
    plane_scoring.py  the plane finder's library: a finished run's classifier over video frames
    metrics.py / results.py / plots.py       metrics.json + confusion-matrix PNG
    export.py         our encoder -> torchvision safetensors
"""
