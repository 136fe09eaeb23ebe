"""Scanner styles, fan geometry, scan conversion, burned-in UI, and the frame renderer.

A *style* stands for one machine type in a hospital's fleet: probe geometry (phased or
convex, sector angle), speckle size, dynamic range, grey map, persistence and its own
screen layout (text, depth ruler, logo). Each video jitters the style's settings a little,
as sonographers adjust gain and TGC per exam (a patient's videos share those settings to the
degree PhantomConfig.video_variability says).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage, sparse

from fetal_ssl_jax.phantom import acoustics as AC
from fetal_ssl_jax.phantom import anatomy as A


@dataclasses.dataclass(frozen=True)
class Style:
    name: str
    half_angle_deg: float     # sector half-angle
    convex_radius: float      # virtual apex distance above the skin line (0 = phased array), in image depths
    psf_axial: float          # depth samples at 256 px
    psf_lateral: float        # beams at 128 beams
    psf_lateral_far: float
    dynamic_range: float
    gamma: float
    persistence: float
    ref: float                # envelope level displayed white
    smoothing: float          # speckle reduction (display filter sigma, samples at 256 px)
    vendor: str
    probe: str
    ui_side: int              # +1 ruler on the right, -1 on the left
    x_offset: float           # horizontal placement of the fan (fraction of width)


STYLES: tuple[Style, ...] = (
    Style("A", 38, 0.0, 1.3, 1.1, 2.2, 55, 1.25, 0.25, 4.0, 0.0, "ECHOSCAN", "P5-1 FETAL", +1, 0.0),
    Style("B", 34, 0.35, 1.8, 1.5, 2.6, 62, 1.45, 0.15, 2.8, 0.8, "SONOVIA", "C6-2 OB", -1, 0.04),
    Style("C", 42, 0.12, 1.0, 1.0, 1.8, 50, 1.1, 0.35, 2.2, 0.4, "MEDIWAVE", "C5-1", +1, -0.03),
    Style("D", 30, 0.5, 1.5, 1.3, 2.4, 66, 1.6, 0.1, 3.2, 1.0, "ULTRAX", "C9-4 OB/GYN", +1, 0.02),
    Style("E", 45, 0.0, 1.1, 1.3, 2.0, 58, 1.2, 0.3, 2.6, 0.0, "KARDIA", "S3 FETAL ECHO", -1, -0.02),
    Style("F", 36, 0.22, 2.0, 1.7, 3.0, 52, 1.35, 0.2, 2.5, 0.6, "NOVASON", "C4-8 OB", +1, 0.0),
)


def video_acoustics(style: Style, rng: np.random.Generator, size: int, beams: int, jitter: float = 1.0) -> AC.Acoustics:
    """The style's settings as the sonographer left them for one exam (gain, TGC, focus, ...)."""
    j = jitter
    sc_ax = max(size / 256.0, 0.45)
    sc_lat = max(beams / 128.0, 0.55)
    ntis = len(A.TISSUE_NAMES)
    tissue = np.exp(j * 0.12 * rng.standard_normal(ntis)).astype(np.float32)
    tissue[[A.BLOOD, A.FLUID]] = 1.0
    return AC.Acoustics(
        psf_axial=style.psf_axial * sc_ax * float(np.exp(j * 0.1 * rng.standard_normal())),
        psf_lateral=style.psf_lateral * sc_lat * float(np.exp(j * 0.1 * rng.standard_normal())),
        psf_lateral_far=style.psf_lateral_far * sc_lat * float(np.exp(j * 0.1 * rng.standard_normal())),
        focus=float(rng.uniform(0.45, 0.75)),
        attenuation=float(1.6 * np.exp(j * 0.15 * rng.standard_normal())),
        tgc_compensation=float(rng.uniform(0.7, 0.95)),
        tgc_wobble=tuple(float(x) for x in j * rng.uniform(-3, 3, 3)),
        noise=float(0.004 * np.exp(j * 0.4 * rng.standard_normal())),
        specular=float(1.2 * np.exp(j * 0.2 * rng.standard_normal())),
        dynamic_range=float(style.dynamic_range + j * rng.uniform(-5, 5)),
        gain=float(j * rng.uniform(-4, 4)),
        gamma=float(style.gamma * np.exp(j * 0.08 * rng.standard_normal())),
        rho_tissue=float(rng.uniform(0.9, 0.97)),
        rho_blood=float(rng.uniform(0.2, 0.5)),
        persistence=float(np.clip(style.persistence + j * rng.uniform(-0.08, 0.08), 0, 0.6)),
        tissue_jitter=tuple(float(x) for x in tissue),
        smoothing=float(style.smoothing * sc_ax),
    )


@dataclasses.dataclass
class Geometry:
    """Polar grid and scan-conversion tables for one (style, image size)."""
    height: int
    width: int
    depth_samples: int
    beams: int
    r0: float
    half_angle: float
    grid_x: np.ndarray        # [D, B] image-plane coordinates (depth units) of each polar sample
    grid_z: np.ndarray
    fan_index: np.ndarray     # [N] flat output pixels inside the fan
    src: np.ndarray           # [4 * sub^2, N] flat polar indices of the bilinear corners of each sub-sample
    wts: np.ndarray           # [4 * sub^2, N] (sum to 1 per pixel)
    px_per_depth: float
    top_px: float
    apex_px: tuple[float, float]
    resample: "sparse.csr_matrix | None" = None  # [D*B, N]: polar image (flat) @ resample = fan pixels

    def __post_init__(self) -> None:
        n, k = self.fan_index.size, self.src.shape[0]
        m = sparse.coo_matrix((self.wts.T.ravel(), (np.repeat(np.arange(n), k), self.src.T.ravel())),
                              shape=(n, self.depth_samples * self.beams))
        self.resample = m.T.tocsr()  # duplicates (shared corners of sub-samples) are summed


MIN_DEPTH_SAMPLES = 128  # small images are simulated at this resolution and area-averaged down


@functools.lru_cache(maxsize=64)
def geometry(style: Style, height: int, width: int) -> Geometry:
    """Polar grid and scan conversion for one style and output size.

    The acoustics run on at least MIN_DEPTH_SAMPLES x MIN_DEPTH_SAMPLES/2 samples; an output
    smaller than that averages sub x sub bilinear samples per pixel, so a 64-pixel image
    looks like a downsampled export (speckle averaged out) rather than pixel-sized speckle.
    """
    d_s, b_s = max(height, MIN_DEPTH_SAMPLES), max(32, width // 2, MIN_DEPTH_SAMPLES // 2)
    sub = max(1, int(math.ceil(d_s / height)))
    r0, th = style.convex_radius, math.radians(style.half_angle_deg)
    z_top = r0 * (math.cos(th) - 1.0)
    top_m, bot_m = 0.09 * height, 0.03 * height
    scale = min((height - top_m - bot_m) / (1.0 - z_top), 0.9 * width / (2 * (r0 + 1) * math.sin(th)))
    cx = width / 2 + style.x_offset * width
    top_px = top_m - z_top * scale
    # polar sample centres
    r = r0 + (np.arange(d_s) + 0.5) / d_s
    t = -th + (np.arange(b_s) + 0.5) / b_s * 2 * th
    gx = (r[:, None] * np.sin(t)[None, :]).astype(np.float32)
    gz = (r[:, None] * np.cos(t)[None, :] - r0).astype(np.float32)
    # scan conversion: output pixel centres -> fractional polar indices (inside test at the centre)
    def polar(jj, ii):
        x = (jj - cx) / scale
        z = (ii - top_px) / scale
        return np.hypot(x, z + r0), np.arctan2(x, z + r0)

    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rr, tt = polar(jj, ii)
    inside = (rr >= r0) & (rr <= r0 + 1) & (np.abs(tt) <= th)
    idx = np.flatnonzero(inside)
    srcs, wtss = [], []
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    for oy in offs:
        for ox in offs:
            rr, tt = polar(jj.ravel()[idx] + ox, ii.ravel()[idx] + oy)
            fi = np.clip((rr - r0) * d_s - 0.5, 0, d_s - 1)
            fb = np.clip((tt + th) / (2 * th) * b_s - 0.5, 0, b_s - 1)
            i0 = np.minimum(np.floor(fi).astype(np.int64), d_s - 2)
            b0 = np.minimum(np.floor(fb).astype(np.int64), b_s - 2)
            wi, wb = fi - i0, fb - b0
            srcs.append(np.stack([i0 * b_s + b0, i0 * b_s + b0 + 1, (i0 + 1) * b_s + b0, (i0 + 1) * b_s + b0 + 1]))
            wtss.append(np.stack([(1 - wi) * (1 - wb), (1 - wi) * wb, wi * (1 - wb), wi * wb]) / (sub * sub))
    src = np.concatenate(srcs, 0)                     # [4 * sub^2, N]
    wts = np.concatenate(wtss, 0).astype(np.float32)
    return Geometry(height, width, d_s, b_s, r0, th, gx, gz, idx, src, wts, float(scale), float(top_px),
                    (float(cx), float(top_px - r0 * scale)))


def scan_convert(img: np.ndarray, geo: Geometry, fan_only: bool = False) -> np.ndarray:
    """Polar display image [T, D, B] in [0, 1] -> cartesian [T, H, W] float32 (0 outside the fan).

    Bilinear interpolation as one precomputed sparse matrix (4 weights per fan pixel);
    fan_only=True returns just the fan pixels [T, N] (in geo.fan_index order).
    """
    t = img.shape[0]
    fan = np.asarray(img.reshape(t, -1) @ geo.resample, dtype=np.float32)
    if fan_only:
        return fan
    vals = np.zeros((t, geo.height * geo.width), dtype=np.float32)
    vals[:, geo.fan_index] = fan
    return vals.reshape(t, geo.height, geo.width)


# ---------------------------------------------------------------- burned-in UI
_FONT_CACHE: dict[int, ImageFont.ImageFont] = {}


def _font(px: int) -> ImageFont.ImageFont:
    if px not in _FONT_CACHE:
        try:
            _FONT_CACHE[px] = ImageFont.load_default(size=px)
        except Exception:  # Pillow without FreeType
            _FONT_CACHE[px] = ImageFont.load_default()
    return _FONT_CACHE[px]


def ui_overlay(style: Style, geo: Geometry, rng: np.random.Generator, ac: AC.Acoustics,
               depth_cm: float, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha [H, W], value [H, W]) of text, depth ruler, focus marker, logo and grey bar.

    Drawn at >= 256 px and downsampled, so small outputs get the grey smudges a real
    resized export would have.
    """
    up = max(1, int(math.ceil(256 / geo.height)))
    H, W = geo.height * up, geo.width * up
    val = Image.new("L", (W, H), 0)
    alp = Image.new("L", (W, H), 0)
    dv, da = ImageDraw.Draw(val), ImageDraw.Draw(alp)
    f = _font(max(7, int(round(0.035 * H))))
    fs = _font(max(6, int(round(0.028 * H))))

    def text(xy, s, font, shade=230):
        dv.text(xy, s, fill=shade, font=font)
        da.text(xy, s, fill=255, font=font)

    def line(pts, w=1, shade=200):
        dv.line(pts, fill=shade, width=w)
        da.line(pts, fill=255, width=w)

    date = f"{int(rng.integers(2015, 2024))}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(1, 29)):02d}"
    clock = f"{int(rng.integers(8, 18)):02d}:{int(rng.integers(0, 60)):02d}:{int(rng.integers(0, 60)):02d}"
    text((0.015 * W, 0.005 * H), style.vendor, f, 255)
    text((0.015 * W, 0.045 * H), f"{date} {clock}", fs, 190)
    right = f"MI {rng.uniform(0.6, 1.3):.1f} TIs {rng.uniform(0.1, 0.6):.1f}"
    text((0.62 * W, 0.005 * H), right, fs, 210)
    text((0.62 * W, 0.04 * H), style.probe, fs, 210)
    side_x = 0.015 * W if style.ui_side > 0 else 0.86 * W
    for k, s in enumerate((f"FR {fps:.0f}", f"G {50 + ac.gain:.0f}", f"DR {ac.dynamic_range:.0f}", "2D", f"{depth_cm:.1f}cm")):
        text((side_x, 0.14 * H + k * 0.045 * H), s, fs, 200)
    # depth ruler along the fan edge
    th = geo.half_angle
    ax, ay = geo.apex_px[0] * up, geo.apex_px[1] * up
    sgn = style.ui_side
    rpx = geo.px_per_depth * up
    n_cm = int(depth_cm)
    for c in range(n_cm + 1):
        r = geo.r0 + c / depth_cm
        x = ax + sgn * (r * math.sin(th) * rpx + 0.02 * W)
        y = ay + r * math.cos(th) * rpx
        ln = 0.02 * W if c % 5 == 0 else 0.01 * W
        line([(x, y), (x + sgn * ln, y)], max(1, up // 2 + 1))
        if c % 5 == 0 and c > 0:
            text((x + sgn * 0.025 * W - (0.04 * W if sgn < 0 else 0), y - 0.015 * H), str(c), fs, 220)
    # focus marker
    r = geo.r0 + ac.focus
    x = ax + sgn * (r * math.sin(th) * rpx + 0.02 * W)
    y = ay + r * math.cos(th) * rpx
    tri = [(x, y), (x + sgn * 0.025 * W, y - 0.012 * H), (x + sgn * 0.025 * W, y + 0.012 * H)]
    dv.polygon(tri, fill=220)
    da.polygon(tri, fill=255)
    # orientation marker near the top of the fan
    mx = ax - sgn * ((geo.r0 + 0.03) * math.sin(th) * rpx + 0.03 * W)
    my = ay + (geo.r0 + 0.03) * math.cos(th) * rpx
    dv.ellipse([mx - 0.012 * W, my - 0.012 * W, mx + 0.012 * W, my + 0.012 * W], fill=235)
    da.ellipse([mx - 0.012 * W, my - 0.012 * W, mx + 0.012 * W, my + 0.012 * W], fill=255)
    # grey bar
    gx = 0.965 * W if sgn > 0 else 0.01 * W
    for k in range(int(0.3 * H)):
        y = 0.6 * H + k
        shade = int(255 * (1 - k / (0.3 * H)))
        dv.line([(gx, y), (gx + 0.02 * W, y)], fill=shade)
        da.line([(gx, y), (gx + 0.02 * W, y)], fill=255)
    # logo
    text((0.015 * W if sgn < 0 else 0.8 * W, 0.93 * H), style.vendor[:3] + "*", f, 160)
    if up > 1:
        val = val.resize((geo.width, geo.height), Image.BOX)
        alp = alp.resize((geo.width, geo.height), Image.BOX)
    a = np.asarray(alp, dtype=np.float32) / 255.0
    v = np.asarray(val, dtype=np.float32) / 255.0
    v = np.where(a > 0, v / np.maximum(a, 1e-3), 0.0)
    return a, np.clip(v, 0, 1)


# ---------------------------------------------------------------- the renderer
@dataclasses.dataclass
class Pose:
    """Per-frame fetal pose in the image plane (depth units): centre, thorax radius, rotation, mirror."""
    cx: np.ndarray
    cz: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    mirror: np.ndarray


class Renderer:
    """Renders frames of one video (or one batch of stills) with persistent speckle and persistence."""

    def __init__(self, fetus: A.Fetus, style: Style, size: tuple[int, int], rng: np.random.Generator,
                 fps: float = 25.0, jitter: float = 1.0, temporal: bool = True,
                 exam: Callable[[str], Any] | None = None):
        """exam: part ('acoustics', 'background', 'screen') -> the stream that part of the exam set-up is
        drawn from (synthesis.exam_draws: shared, to a degree, with the patient's other videos); default
        rng for all. Speckle always comes from rng."""
        part = exam if exam is not None else (lambda name: rng)
        self.fetus, self.style = fetus, style
        self.geo = geometry(style, size[0], size[1])
        self.rng = rng
        self.ac = video_acoustics(style, part("acoustics"), self.geo.depth_samples, self.geo.beams, jitter)
        self.temporal = temporal
        self.pool = AC.NoisePool(rng, (self.geo.depth_samples, self.geo.beams))
        self.speckle = AC.SpeckleField(rng, (self.geo.depth_samples, self.geo.beams), self.pool)
        self.prev: np.ndarray | None = None
        self.background = self._background(part("background"))
        screen = part("screen")
        depth_cm = float(screen.uniform(7.0, 12.0))
        self.ui_alpha, self.ui_value = ui_overlay(style, self.geo, screen, self.ac, depth_cm, fps)
        # compositing: out = 255 * (img * (1 - alpha) + value * alpha), rounded; img = 0 outside the fan
        a, v = self.ui_alpha.ravel(), self.ui_value.ravel()
        self._ui_u8 = np.clip(255.0 * v * a + 0.5, 0, 255).astype(np.uint8).reshape(self.geo.height, self.geo.width)
        fi = self.geo.fan_index
        self._fan_scale = (255.0 * (1 - a[fi])).astype(np.float32)
        self._fan_offset = (255.0 * v[fi] * a[fi] + 0.5).astype(np.float32)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Image-fixed labels: maternal abdominal wall near the probe, fluid, uterine wall/placenta deep."""
        g = self.geo
        d = (np.arange(g.depth_samples) + 0.5) / g.depth_samples
        b = np.linspace(-1, 1, g.beams)
        wall = rng.uniform(0.05, 0.16) + 0.02 * np.sin(rng.uniform(1, 3) * b + rng.uniform(0, 6))
        fat = wall * rng.uniform(0.3, 0.6)
        lab = np.full((g.depth_samples, g.beams), A.FLUID, dtype=np.uint8)
        dd = d[:, None]
        lab[dd < wall[None, :]] = A.MAT_MUSCLE
        lab[dd < fat[None, :]] = A.MAT_FAT
        lab[d < 0.012] = A.SKIN
        if rng.random() < 0.7:  # placenta / uterine wall somewhere deep
            deep = rng.uniform(0.8, 0.97) + 0.05 * np.sin(rng.uniform(1, 4) * b + rng.uniform(0, 6))
            lab[dd > deep[None, :]] = A.PLACENTA if rng.random() < 0.5 else A.MAT_MUSCLE
        return lab

    def _polar_box(self, pose: Pose, cx: np.ndarray, cz: np.ndarray, ext: np.ndarray) -> tuple[slice, slice]:
        """Polar index box holding, in every frame, the image-plane discs (cx, cz, ext) [T] (depth units)."""
        g = self.geo
        rc = np.hypot(cx, cz + g.r0)
        tc = np.arctan2(cx, cz + g.r0)
        d0 = np.min(rc - ext) - g.r0
        d1 = np.max(rc + ext) - g.r0
        dt = np.arcsin(np.clip(ext / np.maximum(rc, 1e-6), 0, 1))
        full = np.any(ext >= rc)
        t0 = -g.half_angle if full else np.min(tc - dt)
        t1 = g.half_angle if full else np.max(tc + dt)
        i0 = int(np.clip(np.floor(d0 * g.depth_samples), 0, g.depth_samples))
        i1 = int(np.clip(np.ceil(d1 * g.depth_samples) + 1, 0, g.depth_samples))
        j0 = int(np.clip(np.floor((t0 + g.half_angle) / (2 * g.half_angle) * g.beams), 0, g.beams))
        j1 = int(np.clip(np.ceil((t1 + g.half_angle) / (2 * g.half_angle) * g.beams) + 1, 0, g.beams))
        return slice(i0, i1), slice(j0, j1)

    def _window(self, pose: Pose) -> tuple[slice, slice]:
        """Polar index window covering the fetal body in every frame (the only place anatomy is evaluated)."""
        return self._polar_box(pose, pose.cx, pose.cz, 1.12 * pose.radius)

    def labels(self, s: np.ndarray, phase: np.ndarray, pose: Pose) -> np.ndarray:
        """Tissue labels [T, D, B] on the polar grid.

        Frames whose poses differ a lot (stills) are painted one at a time so that every
        structure is evaluated only in its own small polar box.
        """
        g = self.geo
        t = s.shape[0]
        lab = np.broadcast_to(self.background, (t, g.depth_samples, g.beams)).copy()
        groups = [slice(0, t)] if self.temporal else [slice(k, k + 1) for k in range(t)]
        for sl in groups:
            ps = Pose(pose.cx[sl], pose.cz[sl], pose.radius[sl], pose.angle[sl], pose.mirror[sl])
            self._paint(s[sl], phase[sl], ps, lab[sl])
        return lab

    def _paint(self, s: np.ndarray, phase: np.ndarray, pose: Pose, lab: np.ndarray) -> None:
        """Paint the fetus into lab [T, D, B] (a view) in place."""
        g = self.geo
        wd, wb = self._window(pose)
        if wd.stop <= wd.start or wb.stop <= wb.start:
            return
        b = lambda v: np.asarray(v, np.float32)[:, None, None]
        gx, gz = g.grid_x[wd, wb][None], g.grid_z[wd, wb][None]
        dx, dz = gx - b(pose.cx), gz - b(pose.cz)
        c, sn, rad = b(np.cos(pose.angle)), b(np.sin(pose.angle)), b(pose.radius)
        X = (dx * c + dz * sn) / rad * b(pose.mirror)
        Y = (dz * c - dx * sn) / rad
        cos_a, sin_a = np.cos(pose.angle), np.sin(pose.angle)

        def locate(tx: np.ndarray, ty: np.ndarray, tr: np.ndarray) -> tuple[slice, slice]:
            # thorax frame -> image plane (inverse of the map above), then a polar box inside the window
            xm = tx * pose.mirror
            ix = pose.cx + pose.radius * (xm * cos_a - ty * sin_a)
            iz = pose.cz + pose.radius * (xm * sin_a + ty * cos_a)
            bd, bb = self._polar_box(pose, ix, iz, tr * pose.radius)
            return (slice(max(bd.start, wd.start) - wd.start, max(min(bd.stop, wd.stop) - wd.start, 0)),
                    slice(max(bb.start, wb.start) - wb.start, max(min(bb.stop, wb.stop) - wb.start, 0)))

        A.render_labels(self.fetus, s, phase, X, Y, lab[:, wd, wb], locate)

    def render(self, s: np.ndarray, phase: np.ndarray, pose: Pose) -> np.ndarray:
        """Frames uint8 [T, H, W] for sweep positions s, cardiac phases and poses (all [T])."""
        g, ac = self.geo, self.ac
        lab = self.labels(s, phase, pose)
        amp, rho = AC.amplitude_map(lab, ac, 1.0 / g.depth_samples)
        # Electronic noise (amplified by the TGC) adds a complex Gaussian of its own power to the
        # echo, so echo and noise together are the scatterer field times sqrt(amp^2 + noise^2).
        z = (np.arange(g.depth_samples, dtype=np.float32) + 0.5) / g.depth_samples
        nz = (np.float32(ac.noise) * np.exp(ac.attenuation * ac.tgc_compensation * z)).astype(np.float32)
        amp *= amp
        amp += (nz * nz)[None, :, None]
        np.sqrt(amp, out=amp)
        t = s.shape[0]
        if self.temporal:
            scat = np.empty((t, g.depth_samples, g.beams, 2), dtype=np.float32)
            innov = np.sqrt(1.0 - rho * rho)
            for k in range(t):
                scat[k] = self.speckle.step(rho[k], innov[k])
        else:
            scat = np.stack([self.pool.draw() for _ in range(t)])
        iq = AC.rf_field(amp, scat, ac)
        disp = AC.log_compress(AC.intensity(iq), ac, self.style.ref, intensity=True)
        if ac.smoothing > 0.2:
            disp = ndimage.gaussian_filter(disp, (0, ac.smoothing, ac.smoothing * 0.7), truncate=2.5)
        if self.temporal and ac.persistence > 0:
            p = np.float32(ac.persistence)
            for k in range(t):
                if self.prev is not None:
                    disp[k] *= 1 - p
                    disp[k] += p * self.prev
                self.prev = disp[k]
        fan = scan_convert(disp, g, fan_only=True)
        fan *= self._fan_scale
        fan += self._fan_offset
        np.clip(fan, 0, 255, out=fan)
        out = np.repeat(self._ui_u8[None], t, axis=0).reshape(t, -1)
        out[:, g.fan_index] = fan.astype(np.uint8)
        return out.reshape(t, g.height, g.width)
