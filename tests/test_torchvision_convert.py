"""torchvision <-> Flax ResNet conversion: exact round trip on torchvision-named state dicts,
file formats, channel folding, and (with torch installed) equal logits against a
hand-written PyTorch ResNet with torchvision's module names."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fetal_ssl_jax.models import ResNet18, ResNet50
from fetal_ssl_jax.models.torchvision_convert import (
    check_compatible,
    from_torchvision,
    load_state_dict,
    save_safetensors,
    to_torchvision,
)

LAYERS = {"resnet18": ((2, 2, 2, 2), "basic"), "resnet50": ((3, 4, 6, 3), "bottleneck")}


def torchvision_shapes(arch: str, num_classes: int = 1000, in_ch: int = 3) -> dict[str, tuple]:
    """State-dict names and shapes exactly as torchvision.models.<arch>() produces them,
    written out from torchvision's constructor logic (independent of our converter)."""
    stages, block = LAYERS[arch]
    exp = 4 if block == "bottleneck" else 1
    shapes: dict[str, tuple] = {}

    def bn(prefix, c):
        for n in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{n}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, in_ch, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for s, n in enumerate(stages):
        planes = 64 * 2 ** s
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            stride = 2 if (s > 0 and b == 0) else 1
            if block == "basic":
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                shapes[f"{p}.conv3.weight"] = (planes * exp, planes, 1, 1)
                bn(f"{p}.bn3", planes * exp)
            if stride != 1 or inplanes != planes * exp:
                shapes[f"{p}.downsample.0.weight"] = (planes * exp, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * exp)
            inplanes = planes * exp
    shapes["fc.weight"] = (num_classes, 512 * exp)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def random_state_dict(shapes: dict[str, tuple], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = np.zeros((), np.int64)
        elif k.endswith("running_var"):
            sd[k] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            sd[k] = rng.normal(size=shape).astype(np.float32)
    return sd


def model_for(arch: str, num_classes: int | None = 1000):
    return (ResNet18 if arch == "resnet18" else ResNet50)(num_classes=num_classes)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_round_trip_is_exact(arch):
    shapes = torchvision_shapes(arch)
    sd = random_state_dict(shapes)
    variables = from_torchvision(sd, in_channels=3)
    # fits our model exactly (names, shapes, collections)
    model = model_for(arch)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    check_compatible(variables, abstract)
    back = to_torchvision(variables)
    assert list(back) == list(shapes)  # torchvision's key order too
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_layouts_and_channel_folding():
    sd = random_state_dict(torchvision_shapes("resnet18"))
    v3 = from_torchvision(sd, in_channels=3)
    np.testing.assert_array_equal(v3["params"]["layer2_0"]["conv1"]["kernel"],
                                  sd["layer2.0.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v3["params"]["fc"]["kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(v3["batch_stats"]["layer3_0"]["downsample_1"]["var"],
                                  sd["layer3.0.downsample.1.running_var"])
    np.testing.assert_array_equal(v3["params"]["bn1"]["scale"], sd["bn1.weight"])
    w = sd["conv1.weight"].transpose(2, 3, 1, 0)
    mean = from_torchvision(sd, in_channels=1)["params"]["conv1"]["kernel"]
    total = from_torchvision(sd, in_channels=1, reduce="sum")["params"]["conv1"]["kernel"]
    assert mean.shape == (7, 7, 1, 64)
    np.testing.assert_allclose(mean, w.mean(axis=2, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(total, w.sum(axis=2, keepdims=True), rtol=1e-6)
    no_fc = from_torchvision(sd, include_fc=False)
    assert "fc" not in no_fc["params"]
    check_compatible(no_fc, jax.eval_shape(lambda: ResNet18().init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)))
    with pytest.raises(ValueError):
        from_torchvision(sd, in_channels=2)
    with pytest.raises(ValueError, match="missing params/fc"):
        check_compatible(no_fc, jax.eval_shape(lambda: ResNet18(num_classes=1000).init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)))


def test_file_formats(tmp_path):
    sd = random_state_dict(torchvision_shapes("resnet18"), seed=1)
    variables = from_torchvision(sd, in_channels=3)
    st = tmp_path / "enc.safetensors"
    save_safetensors(variables, str(st))
    np.savez(tmp_path / "enc.npz", **sd)
    for path in (st, tmp_path / "enc.npz"):
        loaded = load_state_dict(str(path))
        assert set(loaded) == set(sd)
        for k in sd:
            np.testing.assert_array_equal(loaded[k], sd[k])
    with pytest.raises(ValueError, match="unsupported"):
        load_state_dict(str(tmp_path / "enc.bin"))


# ----------------------------------------------------------------- against PyTorch
def _torch_resnet(arch: str, num_classes: int, width: float = 1.0):
    """benchmarks/torch_resnet.py's torchvision-style ResNet with non-trivial BN state."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from benchmarks.torch_resnet import make_torch_resnet

    torch.manual_seed(0)
    model = make_torch_resnet(arch, num_classes=num_classes, width=width)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("arch,width,size", [("resnet18", 1.0, 64), ("resnet50", 0.25, 32)])
def test_logits_match_pytorch(arch, width, size):
    torch = pytest.importorskip("torch")
    tmodel = _torch_resnet(arch, num_classes=10, width=width)
    sd = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    if width == 1.0:
        assert {k: tuple(v.shape) for k, v in sd.items()} == torchvision_shapes(arch, num_classes=10)
    ours = (ResNet18 if arch == "resnet18" else ResNet50)(num_classes=10, width=width)
    rng = np.random.default_rng(0)
    gray = rng.normal(size=(2, size, size, 1)).astype(np.float32)
    rgb = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        ref_rgb = tmodel(torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())).numpy()
        ref_gray = tmodel(torch.from_numpy(np.repeat(gray, 3, axis=3).transpose(0, 3, 1, 2).copy())).numpy()

    apply = jax.jit(lambda v, x: ours.apply(v, x, train=False))
    out_rgb = apply(from_torchvision(sd, in_channels=3), rgb)
    np.testing.assert_allclose(out_rgb, ref_rgb, rtol=1e-4, atol=1e-4)
    # export: our variables load strictly into the PyTorch model and reproduce the logits
    exported = to_torchvision(from_torchvision(sd, in_channels=3))
    tmodel.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in exported.items()}, strict=True)
    with torch.no_grad():
        again = tmodel(torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_array_equal(again, ref_rgb)
    # 1-channel input with summed RGB filters == the RGB network on a gray image
    if arch != "resnet18":
        return  # one more compile; the stem folding is the same for every arch
    out_gray = apply(from_torchvision(sd, in_channels=1, reduce="sum"), gray)
    np.testing.assert_allclose(out_gray, ref_gray, rtol=1e-4, atol=1e-4)


def test_load_pth(tmp_path):
    torch = pytest.importorskip("torch")
    sd = random_state_dict(torchvision_shapes("resnet18"), seed=2)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: torch.from_numpy(v) for k, v in sd.items()}}, path)
    loaded = load_state_dict(str(path))
    assert set(loaded) == set(sd)
    np.testing.assert_array_equal(loaded["layer4.1.bn2.running_var"], sd["layer4.1.bn2.running_var"])
