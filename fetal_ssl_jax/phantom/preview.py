"""The preview sheet: every plane at several cardiac phases and scanner styles, plus one sweep strip."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from fetal_ssl_jax.phantom import anatomy as A
from fetal_ssl_jax.phantom import scanner as S
from fetal_ssl_jax.phantom import synthesis as Y
from fetal_ssl_jax.phantom.presets import PhantomConfig


def preview_sheet(cfg: PhantomConfig, seed: int = 0, size: int = 192, phases: tuple[float, ...] = (0.15, 0.6),
                  styles: tuple[int, ...] = (0, 1, 4), strip: int = 10) -> np.ndarray:
    """uint8 [H, W]: rows = (style, phase), columns = planes; last row = frames along one sweep."""
    tiles: list[list[np.ndarray]] = []
    labels: list[str] = []
    for k, si in enumerate(styles):
        fetus = Y.fetus_of(seed, k, cfg.variation)
        rng = Y.rng_for(seed, 99, k)
        ren = S.Renderer(fetus, S.STYLES[si % len(S.STYLES)], (size, size), rng, fps=cfg.fps, temporal=False)
        base = __import__("fetal_ssl_jax.phantom.sweep", fromlist=["x"]).base_pose(rng, cfg.rotation_deg)
        for ph in phases:
            n = len(A.CLASSES)
            s = np.array([A.KEYFRAMES[c] for c in A.CLASSES]) + fetus.plane_offset
            pose = S.Pose(np.full(n, base["cx"]), np.full(n, base["cz"]), np.full(n, base["radius"]),
                          np.full(n, base["angle"]), np.full(n, base["mirror"]))
            tiles.append(list(ren.render(s, np.full(n, ph), pose)))
            labels.append(f"style {S.STYLES[si % len(S.STYLES)].name}, cardiac phase {ph:.2f}")
    cfg_v = PhantomConfig(**{**cfg.__dict__, "image_size": size, "frames": 120})
    frames, meta = Y.render_video(cfg_v, seed, 0, 0)
    idx = np.linspace(0, frames.shape[0] - 1, strip).astype(int)
    pad = 18
    cols = max(len(A.CLASSES), 1)
    W = cols * size
    sweep_w = strip * (size // 2)
    W = max(W, sweep_w)
    H = pad + len(tiles) * size + pad + size // 2 + pad
    sheet = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(sheet)
    for j, c in enumerate(A.CLASSES):
        d.text((j * size + 4, 3), c, fill=255)
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            sheet.paste(Image.fromarray(t), (j * size, pad + i * size))
        d.text((4, pad + i * size + size - 12), labels[i], fill=200)
    y = pad + len(tiles) * size
    d.text((4, y + 3), "one sweep (true s / plane per frame):", fill=255)
    for k, t in enumerate(idx):
        im = Image.fromarray(frames[t]).resize((size // 2, size // 2), Image.BILINEAR)
        sheet.paste(im, (k * (size // 2), y + pad))
        d.text((k * (size // 2) + 2, y + pad + size // 2 - 11), f"{meta['s'][t]:.2f} {meta['plane'][t][:5]}", fill=255)
    return np.asarray(sheet)


def write_preview(path: str, cfg: PhantomConfig, seed: int = 0, size: int = 192) -> str:
    Image.fromarray(preview_sheet(cfg, seed, size)).save(path, optimize=True)
    return path
