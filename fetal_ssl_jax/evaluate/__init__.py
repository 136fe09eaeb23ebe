"""Downstream evaluation per ../shared/PROTOCOL.md: linear probe, full fine-tune, kNN; metrics.

    cli.py            launch.py probe | finetune | knn
    init.py           random | SSL encoder | imagenet:<torchvision state dict>
    labelled_data.py  the store (or a simulated one), the label subset, eval splits
    labelled_pipeline.py  grain batches for fine-tuning
    features.py       jitted, sharded frozen forward + feature cache
    linear_probe.py / finetune.py / knn.py   the protocols
    metrics.py / results.py / plots.py       metrics.json + confusion-matrix PNG
    export.py         our encoder -> torchvision safetensors
"""
