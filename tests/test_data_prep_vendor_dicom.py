"""Real vendor DICOM: files written with pydicom itself (not our writer), one per photometric
interpretation, bit depth and transfer syntax; dual-personality and preamble-less files;
colour Doppler, the Ultrasound Region Calibration and frame timing through `prepare frames`."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space

import launch
from data_prep import readers
from data_prep import sample_media as sm
from fetal_ssl_jax.data.frame_store import FrameStore, decode_frame

H, W, N = 48, 64, 4
GRAY = sm.fan_frames(N, H, W, seed=11)
RGB = sm.fan_frames(N, H, W, seed=12, rgb=True)  # a sepia-tinted B-mode, as some vendors show it
LUMA = np.clip(RGB.astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5, 0, 255)


def _ds(arr, pi, bits, **extra):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.PatientID, ds.Modality = "VENDOR-1", "US"
    ds.set_pixel_data(np.ascontiguousarray(arr), pi, bits)
    for k, v in extra.items():
        setattr(ds, k, v)
    return ds


def _read(path):
    clip, = readers.open_source(path, readers.kind_of(path) or "dicom")
    arr = np.stack([f for _, f in clip.frames(1)])
    return clip, (clip.lut[arr] if clip.lut is not None else arr)


def _palette(ds, lut_rgb, bits):
    for c, name in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [len(lut_rgb), 0, bits])
        data = lut_rgb[:, c].astype("<u2" if bits == 16 else np.uint8).tobytes()
        setattr(ds, f"{name}PaletteColorLookupTableData", data)
        ds[f"{name}PaletteColorLookupTableData"].VR = "OW"
    return ds


def _ybr422(rgb):
    """Native YBR_FULL_422: Y0 Y1 Cb Cr per pair of pixels."""
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.uint16)
    y = ybr[..., 0]
    cb = (ybr[..., 0::2, 1] + ybr[..., 1::2, 1] + 1) // 2
    cr = (ybr[..., 0::2, 2] + ybr[..., 1::2, 2] + 1) // 2
    return np.stack([y[..., 0::2], y[..., 1::2], cb, cr], -1).astype(np.uint8).tobytes()


def _jpeg12_blocks(img):
    """A 12-bit JPEG-extended (SOF1, Huffman) stream of a block-constant image: DC only, quantisers 1.

    No installable encoder writes 12-bit lossy JPEG, so the test writes the bitstream itself; the
    values survive exactly, so the decoder and the 12-bit scaling are checked to the grey level."""
    h, w = img.shape

    def seg(m, body):
        return bytes([0xFF, m]) + (len(body) + 2).to_bytes(2, "big") + body
    dqt = seg(0xDB, bytes([0x00]) + bytes([1] * 64))
    sof = seg(0xC1, bytes([12]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0]))
    dht = seg(0xC4, bytes([0x00, 0, 0, 0, 0, 16] + [0] * 11 + list(range(16)) + [0x10, 1] + [0] * 15 + [0x00]))
    sos = seg(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
    bits, pred = [], 0
    for by in range(0, h, 8):
        for bx in range(0, w, 8):
            dc = 8 * (int(img[by, bx]) - 2048)
            d, pred = dc - pred, dc
            cat = abs(d).bit_length()
            bits += [int(c) for c in format(cat, "05b")]
            if cat:
                bits += [int(c) for c in format(d if d > 0 else d + (1 << cat) - 1, f"0{cat}b")]
            bits.append(0)  # AC table: '0' = end of block
    bits += [1] * (-len(bits) % 8)
    data = bytearray()
    for i in range(0, len(bits), 8):
        data.append(int("".join(map(str, bits[i:i + 8])), 2))
        if data[-1] == 0xFF:
            data.append(0)
    return b"\xff\xd8" + dqt + sof + dht + sos + bytes(data) + b"\xff\xd9"


BLOCKS = np.kron(GRAY[:, ::8, ::8].astype(np.uint16) * 16 + 8, np.ones((1, 8, 8), np.uint16))  # 12-bit, blocky


def _jpeg12(path):
    ds = _ds(BLOCKS, "MONOCHROME2", 12)
    ds.PixelData = encapsulate([_jpeg12_blocks(f) for f in BLOCKS])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid.JPEGExtended12Bit
    ds.save_as(path, enforce_file_format=True)


def _compressed(arr, pi, bits, ts, set_pi=None, **kw):
    def write(path):
        ds = _ds(arr, pi, bits)
        ds.compress(ts, **kw)
        if set_pi:  # RGB through the J2K colour transform is labelled by what the codestream holds
            ds.PhotometricInterpretation = set_pi
        ds.save_as(path, enforce_file_format=True)
    return write


def _plain(arr, pi, bits, post=None, **extra):
    def write(path):
        ds = _ds(arr, pi, bits, **extra)
        if post:
            post(ds)
        ds.save_as(path, enforce_file_format=True)
    return write


TINT = np.stack([np.arange(256), np.arange(256) * 0.9, np.arange(256) * 0.8], -1).round()
JUNK = np.uint16(0xA000)  # bits above BitsStored (overlay planes, vendor flags): must be masked off


def _as_12bit(ds):
    ds.BitsStored, ds.HighBit = 12, 11


def _set_ybr422(ds):
    ds.PixelData = _ybr422(RGB)
    ds.PhotometricInterpretation = "YBR_FULL_422"


def _ybr_partial_jpeg(path):
    """JPEG baseline labelled YBR_PARTIAL_422, as older vendor exports do (the JPEG itself is full range)."""
    import pydicom
    sm.write_dicom(path, RGB, "jpeg")
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "YBR_PARTIAL_422"
    ds.save_as(path, enforce_file_format=True)


CASES = {  # name: (writer, reference grey frames, mean |error| allowed)
    "MONOCHROME1": (_plain(255 - GRAY, "MONOCHROME1", 8), GRAY, 0.0),
    "MONOCHROME2_8bit": (_plain(GRAY, "MONOCHROME2", 8), GRAY, 0.0),
    "MONOCHROME2_12bit_in_16": (_plain(GRAY.astype(np.uint16) * 16 | JUNK, "MONOCHROME2", 16, post=_as_12bit),
                                GRAY, 0.6),
    "MONOCHROME2_16bit": (_plain(GRAY.astype(np.uint16) * 257, "MONOCHROME2", 16), GRAY, 0.0),
    "MONOCHROME2_signed_16bit": (_plain((GRAY.astype(np.int32) * 257 - 32768).astype(np.int16), "MONOCHROME2", 16),
                                 GRAY, 0.0),
    "PALETTE_8bit_LUT": (_plain(GRAY, "PALETTE COLOR", 8, post=lambda d: _palette(d, TINT, 8)),
                         np.clip(TINT[GRAY] @ [0.299, 0.587, 0.114] + 0.5, 0, 255), 0.6),
    "PALETTE_16bit_LUT": (_plain(GRAY, "PALETTE COLOR", 8,  # the reported file: entries up to 65280
                                 post=lambda d: _palette(d, np.repeat(np.arange(256)[:, None] * 256, 3, 1), 16)),
                          GRAY, 1.0),
    "RGB": (_plain(RGB, "RGB", 8), LUMA, 0.6),
    "YBR_FULL": (_plain(convert_color_space(RGB, "RGB", "YBR_FULL"), "YBR_FULL", 8), LUMA, 1.0),
    "YBR_FULL_422": (_plain(RGB, "RGB", 8, post=_set_ybr422), LUMA, 1.0),
    "YBR_PARTIAL_422_jpeg": (_ybr_partial_jpeg, LUMA, 1.5),
    "YBR_RCT_jpeg2000_lossless": (_compressed(RGB, "RGB", 8, uid.JPEG2000Lossless, "YBR_RCT", use_mct=True),
                                  LUMA, 0.6),
    "YBR_ICT_jpeg2000_lossy": (_compressed(RGB, "RGB", 8, uid.JPEG2000, "YBR_ICT", use_mct=True, j2k_cr=[4]),
                               LUMA, 3.0),
    "JPEG2000_lossless": (_compressed(GRAY, "MONOCHROME2", 8, uid.JPEG2000Lossless), GRAY, 0.0),
    "JPEG2000_lossy_12bit": (_compressed(GRAY.astype(np.uint16) * 16, "MONOCHROME2", 12, uid.JPEG2000, j2k_cr=[4]),
                             GRAY, 3.0),
    "JPEG-LS_lossless_12bit": (_compressed(GRAY.astype(np.uint16) * 16, "MONOCHROME2", 12, uid.JPEGLSLossless),
                               GRAY, 0.6),
    "JPEG-LS_near_lossless": (_compressed(GRAY, "MONOCHROME2", 8, uid.JPEGLSNearLossless, jls_error=2), GRAY, 2.0),
    "JPEG_extended_12bit": (_jpeg12, np.clip(BLOCKS * (255 / 4095) + 0.5, 0, 255).astype(np.uint8), 0.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_vendor_dicom_case_reads_to_the_right_grey(tmp_path, name):
    write, ref, tol = CASES[name]
    p = str(tmp_path / f"{name}.dcm")
    write(p)
    clip, arr = _read(p)
    assert arr.shape == (N, H, W) and arr.dtype == np.uint8
    assert np.abs(arr.astype(float) - ref).mean() <= tol + 1e-9, (name, np.abs(arr.astype(float) - ref).mean())
    assert (arr == 255).mean() <= 0.03, name  # never a white trapezoid
    assert clip.colour is None  # grey and tinted B-mode are not colour flow


@pytest.mark.parametrize("name", ["PALETTE_16bit_LUT", "MONOCHROME2_12bit_in_16", "MONOCHROME1", "YBR_FULL_422",
                                  "MONOCHROME2_16bit"])
def test_saturation_property_on_a_realistic_bmode_frame(tmp_path, name):
    """A realistic B-mode frame (speckle, a bright blob, UI text) keeps its grey range at every depth."""
    write, _, _ = CASES[name]
    p = str(tmp_path / "s.dcm")
    write(p)
    _, arr = _read(p)
    src = (GRAY == 255).mean()
    assert (arr == 255).mean() <= max(0.03, src + 0.005)
    assert (arr >= 250).mean() <= 0.05
    assert 20 < arr[GRAY > 0].mean() < 200


def test_tiff_preamble_wins_over_image_magic(tmp_path):
    p = str(tmp_path / "dual.dcm")
    ds = _ds(RGB, "RGB", 8)
    ds.preamble = b"II*\x00\x08\x00\x00\x00" + bytes(120)  # a TIFF header: the file is also a TIFF
    ds.save_as(p, enforce_file_format=True)
    assert readers.sniff(p) == "dicom"
    bare = str(tmp_path / "IM0001")  # no extension, as on a DICOMDIR media
    os.rename(p, bare)
    assert readers.kind_of(bare) == "dicom"
    _, arr = _read(bare)
    assert np.abs(arr.astype(float) - LUMA).mean() <= 0.6


def test_file_without_preamble_is_read_with_force_and_reported(tmp_path):
    p = str(tmp_path / "raw.dcm")
    ds = _ds(GRAY, "MONOCHROME2", 8)
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    ds.save_as(p, implicit_vr=True, little_endian=True)
    assert open(p, "rb").read(132)[128:] != b"DICM"
    clip, arr = _read(p)
    np.testing.assert_array_equal(arr, GRAY)
    assert any("force=True" in w and "Implicit VR Little Endian" in w for w in clip.meta["warnings"])


@pytest.mark.parametrize("make,reason", [
    (lambda p: open(p, "wb").write(b"this is a report, not an image\n" * 10), "not a readable DICOM file"),
    (_plain(GRAY, "MONOCHROME2", 8, PhotometricInterpretation="HSV"), "unsupported photometric interpretation"),
    (_plain(GRAY, "PALETTE COLOR", 8), "PALETTE COLOR lookup tables unusable"),
], ids=["garbage", "HSV", "palette-without-LUT"])
def test_unusable_vendor_file_says_why(tmp_path, make, reason):
    p = str(tmp_path / "x.dcm")
    make(p)
    with pytest.raises(readers.BadSource, match=reason):
        readers.open_source(p, "dicom")


# ------------------------------------------------------------------ through `prepare frames`

def _doppler_frames(n=8):
    """Grey B-mode cine as RGB; odd frames carry a red/blue colour-flow box inside the sector."""
    g = sm.fan_frames(n, H, W, seed=21)
    rgb = np.repeat(g[..., None], 3, -1)
    for i in range(1, n, 2):
        rgb[i, 22:30, 26:34] = (200, 30, 30)
        rgb[i, 30:34, 26:34] = (30, 40, 210)
    return rgb


def _regions(ds, x0, y0, x1, y1, delta_cm=0.02, units=3):
    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = 1, 1, 0
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x0, y0, x1, y1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX = r.PhysicalDeltaY = delta_cm
    ds.SequenceOfUltrasoundRegions = [r]


def _vendor_export(root):
    d = os.path.join(root, "src", "P1")
    os.makedirs(d)
    wide = np.zeros((6, H, 96), np.uint8)
    wide[:, :, 16:80] = sm.fan_frames(6, H, 64, seed=31)
    wide[:, 2:8, 84:94] = 230  # static UI outside the calibrated region
    _plain(wide, "MONOCHROME2", 8, post=lambda ds: _regions(ds, 16, 0, 79, H - 1), FrameTime=12.5)(
        os.path.join(d, "region80fps.dcm"))
    _plain(_doppler_frames(), "RGB", 8, CineRate=25)(os.path.join(d, "doppler.dcm"))
    _plain(GRAY, "MONOCHROME2", 8, post=lambda ds: _regions(ds, 0, 0, 500, 500),
           FrameTimeVector=[0] + [20] * (N - 1))(os.path.join(d, "badregion.dcm"))
    dual = _ds(RGB, "RGB", 8)
    dual.preamble = b"MM\x00*" + bytes(124)
    dual.save_as(os.path.join(d, "dual.dcm"), enforce_file_format=True)
    _plain(GRAY, "MONOCHROME2", 8, PhotometricInterpretation="ARGB")(os.path.join(d, "argb.dcm"))
    bare = _ds(GRAY, "MONOCHROME2", 8)
    bare.file_meta, bare.preamble = FileMetaDataset(), None
    bare.save_as(os.path.join(d, "bare.dcm"), implicit_vr=True, little_endian=True)
    sm.write_video(os.path.join(d, "cine.mp4"), sm.fan_frames(6, H, W, seed=41), fps=25)
    sm.write_video(os.path.join(d, "colourflow.mp4"), _doppler_frames(), fps=30)
    return os.path.join(root, "src")


def _prepare(src, store, *flags):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = launch.main(["prepare", "frames", "--src", src, "--out", store, "--size", "32", "--stride", "1",
                          "--workers", "0", "--quiet", "--dedup-threshold", "0", *flags])
    return rc, out.getvalue(), err.getvalue(), json.load(open(os.path.join(store, "manifest.json")))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vendor"))
    return root, _vendor_export(root)


def _videos(m):
    return {v["video_id"]: v for v in m["videos"]}


def test_vendor_export_default_run(export):
    root, src = export
    store = os.path.join(root, "store")
    rc, out, err, m = _prepare(src, store)
    assert rc == 0, err
    assert "Traceback" not in err
    v = _videos(m)
    assert sorted(v) == ["P1/badregion", "P1/bare", "P1/cine", "P1/colourflow", "P1/doppler", "P1/dual",
                         "P1/region80fps"]
    assert any(w.startswith("P1/bare.dcm: no 'DICM' marker") and "force=True" in w for w in m["warnings"])
    # skipped file: named, with the reason, in the manifest and on stderr
    assert m["skipped"] == [{"file": "P1/argb.dcm", "reason": m["skipped"][0]["reason"]}]
    assert "unsupported photometric interpretation 'ARGB'" in m["skipped"][0]["reason"]
    assert "skipped P1/argb.dcm: unsupported photometric interpretation" in err
    # a region outside the image: reported, fan detection used
    assert any(w.startswith("P1/badregion.dcm:") and "fan detection instead" in w for w in m["warnings"])
    assert v["P1/badregion"]["fan"]["method"] != "region" and v["P1/badregion"]["mm_per_pixel"] is None
    assert "warning: P1/badregion.dcm:" in err
    # calibrated region: cropped to it exactly, mm/px recorded at the source and the output
    r = v["P1/region80fps"]
    assert r["fan"] == {"bbox": [0, H, 16, 80], "method": "region", "fill": 1.0}
    assert r["source_mm_per_pixel"] == [0.2, 0.2] and r["mm_per_pixel"] == [0.4, 0.4]  # 64 px -> 32 px
    # frame timing per video, from each source the file has
    assert r["timing"] == {"frame_time_ms": 12.5, "fps": 80.0, "source": "FrameTime"}
    assert v["P1/doppler"]["timing"]["source"] == "CineRate" and v["P1/doppler"]["timing"]["fps"] == 25.0
    assert v["P1/badregion"]["timing"] == {"frame_time_ms": 20.0, "fps": 50.0, "source": "FrameTimeVector"}
    assert v["P1/cine"]["timing"]["source"] == "container" and abs(v["P1/cine"]["timing"]["fps"] - 25) < 0.01
    # colour Doppler: counted; the tinted dual-personality RGB file is not colour
    assert v["P1/doppler"]["doppler_frames"] == 4 and v["P1/doppler"]["dropped_doppler"] == 0
    assert v["P1/doppler"]["count"] == 8 and v["P1/dual"]["doppler_frames"] == 0
    assert v["P1/colourflow"]["doppler_frames"] == 4 and v["P1/cine"]["doppler_frames"] == 0  # H.264 chroma planes
    # rerun: nothing converted, the store byte-identical
    before = _snapshot(store)
    rc2, out2, _, _ = _prepare(src, store)
    assert rc2 == 0 and "0 converted now" in out2
    assert _snapshot(store) == before


def _snapshot(store):
    files = [f for f in os.listdir(store) if f not in ("parts", ".lock")]
    files += [os.path.join("parts", f) for f in os.listdir(os.path.join(store, "parts"))]
    return {f: open(os.path.join(store, f), "rb").read() for f in files}


def _frames_of(store, vid):
    fs = FrameStore.open(store)
    src = fs.source()
    v = _videos(json.load(open(os.path.join(store, "manifest.json"))))[vid]
    return np.stack([decode_frame(src[v["start"] + k])["image"] for k in range(v["count"])])


def test_doppler_modes(export):
    root, src = export
    got = {}
    for mode in ("keep-grey", "skip", "as-is"):
        store = os.path.join(root, f"store_{mode}")
        rc, _, err, m = _prepare(src, store, "--doppler", mode)
        assert rc == 0, err
        got[mode] = (_videos(m)["P1/doppler"], _frames_of(store, "P1/doppler"))
    y0, y1, x0, x1 = got["as-is"][0]["fan"]["bbox"]
    s = 32 / max(y1 - y0, x1 - x0)
    oy, ox = (32 - round((y1 - y0) * s)) // 2, (32 - round((x1 - x0) * s)) // 2
    fy = slice(int(np.ceil(oy + (22 - y0) * s)) + 1, int(oy + (34 - y0) * s) - 1)  # the colour box, output pixels
    fx = slice(int(np.ceil(ox + (26 - x0) * s)) + 1, int(ox + (34 - x0) * s) - 1)
    assert got["skip"][0]["count"] == 4 and got["skip"][0]["dropped_doppler"] == 4
    assert got["as-is"][0]["count"] == 8 and got["as-is"][0]["doppler_frames"] == 4
    keep, asis = got["keep-grey"][1], got["as-is"][1]
    np.testing.assert_array_equal(keep[0::2], asis[0::2])  # grey frames untouched
    assert asis[1::2, fy, fx].mean() > 40 and keep[1::2, fy, fx].max() == 0  # overlay removed, like blood


def test_stride_ms_and_mm_per_pixel(export):
    root, src = export
    store = os.path.join(root, "store_ms")
    rc, _, err, m = _prepare(src, store, "--stride-ms", "40", "--mm-per-pixel", "0.8")
    assert rc == 0, err
    v = _videos(m)
    assert {k: x["stride"] for k, x in v.items()} == {"P1/region80fps": 3, "P1/doppler": 1, "P1/badregion": 2,
                                                       "P1/cine": 1, "P1/dual": 1, "P1/colourflow": 1,
                                                       "P1/bare": 1}
    assert v["P1/region80fps"]["sampled"] == 2  # frames 0 and 3 of 6
    assert v["P1/dual"]["stride"] == 1 and any(
        w.startswith("P1/dual.dcm: no frame timing") and "--stride 1 used" in w for w in m["warnings"])
    assert any(w.startswith("P1/cine.mp4: no physical calibration") for w in m["warnings"])
    r = v["P1/region80fps"]
    assert r["mm_per_pixel"] == [0.8, 0.8]
    img = _frames_of(store, "P1/region80fps")[0]
    cols = np.nonzero(img.max(axis=0))[0]
    rows = np.nonzero(img.max(axis=1))[0]
    assert cols.max() - cols.min() + 1 <= 16 and rows.max() - rows.min() + 1 <= 12  # 64x48 px of 0.2 mm -> 0.8 mm
