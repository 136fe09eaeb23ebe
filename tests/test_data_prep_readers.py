"""Every input format, written with its real encoder, read back: frame counts, shapes, pixels."""
import os

import numpy as np
import pytest

from data_prep import readers
from fetal_ssl_jax.data import fan, resize
from data_prep import sample_media as sm
from data_prep.frames import FrameSettings, build
from fetal_ssl_jax.data.frame_store import FrameStore, decode_frame

H, W, N = 96, 128, 12
GRAY = sm.fan_frames(N, H, W, seed=3)
RGB = sm.fan_frames(N, H, W, seed=4, rgb=True)
LUMA = np.clip(RGB.astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5, 0, 255)


def _read(path, kind=None):
    kind = kind or readers.kind_of(path)
    clips = readers.open_source(path, kind)
    out = []
    for c in clips:
        fr = [(i, np.array(f)) for i, f in c.frames(1)]
        arr = np.stack([f for _, f in fr])
        out.append((c, [i for i, _ in fr], c.lut[arr] if c.lut is not None else arr))
    return out


CASES = [  # name, writer, reference, mean-abs-error tolerance
    ("h264.mp4", lambda p: sm.write_video(p, GRAY), GRAY, 3.0),
    ("h264_rgb.mp4", lambda p: sm.write_video(p, RGB), LUMA, 3.0),
    ("mjpeg.avi", lambda p: sm.write_video(p, GRAY, codec="mjpeg"), GRAY, 2.0),
    ("raw.dcm", lambda p: sm.write_dicom(p, GRAY, "raw"), GRAY, 0.0),
    ("raw_rgb.dcm", lambda p: sm.write_dicom(p, RGB, "raw"), LUMA, 0.6),
    ("rle.dcm", lambda p: sm.write_dicom(p, GRAY, "rle"), GRAY, 0.0),
    ("jpeg_ybr422.dcm", lambda p: sm.write_dicom(p, RGB, "jpeg"), LUMA, 1.5),
    ("jpeg_gray.dcm", lambda p: sm.write_dicom(p, GRAY, "jpeg"), GRAY, 1.5),
    ("raw16.dcm", lambda p: sm.write_dicom(p, GRAY.astype(np.uint16) * 16, "raw", bits=12), GRAY, 0.6),
    ("stack.h5", lambda p: sm.write_hdf5(p, {"video": GRAY}), GRAY, 0.0),
    ("stack_rgb.h5", lambda p: sm.write_hdf5(p, {"v": RGB}), LUMA, 0.6),
    ("stack_float.h5", lambda p: sm.write_hdf5(p, {"v": GRAY.astype(np.float32) / 255}), GRAY, 0.6),
]


@pytest.mark.parametrize("name,write,ref,tol", CASES, ids=[c[0] for c in CASES])
def test_format_roundtrip(tmp_path, name, write, ref, tol):
    path = str(tmp_path / name)
    write(path)
    (clip, idx, arr), = _read(path)
    assert idx == list(range(N))
    assert arr.shape == (N, H, W) and arr.dtype == np.uint8
    assert np.abs(arr.astype(float) - ref).mean() <= tol + 1e-9


def test_dicom_patient_and_stride(tmp_path):
    p = str(tmp_path / "x.dcm")
    sm.write_dicom(p, GRAY, "rle", patient_id="MRN-42")
    clip, = readers.open_source(p, "dicom")
    assert clip.patient_hint == "MRN-42" and clip.num_frames == N
    got = list(clip.frames(5))
    assert [i for i, _ in got] == [0, 5, 10]
    np.testing.assert_array_equal(got[1][1], GRAY[5])


def test_hdf5_several_stacks(tmp_path):
    p = str(tmp_path / "s.h5")
    sm.write_hdf5(p, {"b": GRAY[:5], "grp/a": GRAY, "not_a_stack": np.zeros((4, 4))})
    res = _read(p)
    assert [c.name for c, _, _ in res] == ["b", "grp/a"]
    assert [a.shape[0] for _, _, a in res] == [5, N]


@pytest.mark.parametrize("bits,rgb", [(8, False), (8, True), (16, False)])
def test_png_still(tmp_path, bits, rgb):
    img = RGB[0] if rgb else GRAY[0]
    p = str(tmp_path / "a.png")
    sm.write_png(p, img, bits=bits)
    got = readers.read_image(p)
    ref = LUMA[0] if rgb else GRAY[0]
    assert got.shape == (H, W) and got.dtype == np.uint8
    assert np.abs(got.astype(float) - ref).max() <= 1.0


def test_fan_detection_drops_ui():
    f = fan.detect_fan(list(GRAY))
    assert f.method == "variance"
    truth = sm.fan_mask(H, W)
    y0, y1, x0, x1 = f.bbox
    ys, xs = np.nonzero(truth)
    assert abs(y0 - ys.min()) <= 4 and abs(y1 - ys.max() - 1) <= 4
    assert abs(x0 - xs.min()) <= 4 and abs(x1 - xs.max() - 1) <= 4
    lay = resize.plan(f, 64)
    out = lay.apply(GRAY[0])
    assert out.shape == (64, 64)
    assert out[:3, :3].max() == 0  # the UI box in the corner is gone
    still = fan.detect_still_fan(GRAY[0])
    assert still.method == "intensity" and abs(still.bbox[2] - x0) <= 6


def test_store_pixels_match_source(tmp_path):
    """End to end with crop off: the stored frame is the source frame, resized and padded."""
    src = tmp_path / "src" / "P7"
    src.mkdir(parents=True)
    sm.write_dicom(str(src / "a.dcm"), GRAY, "raw")
    sm.write_video(str(src / "b.mp4"), GRAY)
    for i in range(N):
        sm.write_png(str(src / "seq" / f"f{i:02d}.png"), GRAY[i], bits=16 if i % 2 else 8)
    st = FrameSettings(size=W, stride=2, crop="none", dedup_threshold=0)
    m = build(str(tmp_path / "src"), str(tmp_path / "store"), st, workers=0, salt="s", progress=False).manifest
    assert [v["video_id"] for v in m["videos"]] == ["P7/a", "P7/b", "P7/seq"]
    assert m["num_frames"] == 3 * (N // 2)
    fs = FrameStore.open(str(tmp_path / "store"))
    srcds = fs.source()
    pad = (W - H) // 2
    for v, tol in zip(m["videos"], (0.0, 3.0, 0.0)):
        assert v["count"] == N // 2 and v["source_shape"] == [H, W]
        for k in range(v["count"]):
            rec = decode_frame(srcds[v["start"] + k])
            assert rec["frame_index"] == 2 * k and rec["video_id"] == v["video_id"]
            img = rec["image"]
            assert img.shape == (W, W) and img[:pad].max() == 0 and img[pad + H:].max() == 0
            assert np.abs(img[pad:pad + H].astype(float) - GRAY[2 * k]).mean() <= tol + 1e-9
    assert os.path.exists(str(tmp_path / "store" / "manifest.json"))
