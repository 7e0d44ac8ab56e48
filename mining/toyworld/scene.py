"""Render one scene: textured stuff (a ground, sometimes sky above a wavy horizon), then 1-5 things in
random colours, sizes and rotations drawn over each other, then blur and sensor noise.

Ground truth is what is visible: a thing drawn later occludes the earlier ones, and the stuff masks are
what no thing covers. Shapes are drawn 4x supersampled; a pixel belongs to a thing when the thing covers at
least half of it, which is also the alpha it is composited with, so masks agree with the pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from mining.toyworld.vocab import BY_NAME, COLOURS, GROUNDS, THINGS, Category, Instance

SUPERSAMPLE = 4
MIN_VISIBLE_PIXELS = 16


@dataclass
class Scene:
    image: np.ndarray               # uint8[H, W, 3]
    things: list[Instance]          # in drawing order, fully hidden ones removed
    stuff: list[Instance]           # ground (and sky), visible parts
    closeup: bool
    ground: str


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]) -> np.ndarray:
    field = gaussian_filter(rng.normal(0, 1, shape), sigma)
    return field / (field.std() + 1e-6)


def texture(name: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """float32[h, w, 3] in 0..255; each stuff class has its own colour and grain."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    if name == "grass":
        base = np.array([70, 140, 45]) + rng.normal(0, 10, 3)
        blades = _noise(rng, (h, w), (2.5, 0.4)) * 22 + _noise(rng, (h, w), 8) * 12
        img = base + blades[..., None] * np.array([0.6, 1.0, 0.4])
    elif name == "water":
        base = np.array([40, 95, 175]) + rng.normal(0, 10, 3)
        period = rng.uniform(5, 10)
        waves = np.sin(2 * np.pi * y / period + 0.4 * np.sin(x / rng.uniform(6, 14)) + rng.uniform(0, 6.3))
        img = base + (waves * 18 + _noise(rng, (h, w), 1) * 6)[..., None] * np.array([0.8, 0.9, 1.0])
    elif name == "sand":
        base = np.array([215, 190, 135]) + rng.normal(0, 8, 3)
        img = base + (rng.normal(0, 14, (h, w)) + _noise(rng, (h, w), 6) * 10)[..., None]
    elif name == "snow":
        base = np.array([236, 239, 246]) + rng.normal(0, 4, 3)
        img = base + (_noise(rng, (h, w), 5) * 6 + rng.normal(0, 3, (h, w)))[..., None] * np.array([0.9, 0.95, 1.0])
    elif name == "sky":
        top = np.array([90, 145, 225]) + rng.normal(0, 10, 3)
        bottom = np.array([195, 220, 250])
        t = (y / max(h - 1, 1))[..., None]
        clouds = np.clip(_noise(rng, (h, w), 7) - 0.6, 0, None)[..., None] * 60
        img = top * (1 - t) + bottom * t + clouds + np.zeros((h, w, 1))
    else:
        raise ValueError(f"unknown stuff {name!r}")
    return np.broadcast_to(img, (h, w, 3)).astype(np.float32)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (np.arange(4) * math.pi / 2 + math.pi / 4)]
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (np.arange(3) * 2 * math.pi / 3 - math.pi / 2)]
    elif kind == "star":
        pts = [((1.0 if i % 2 == 0 else 0.45) * math.cos(a), (1.0 if i % 2 == 0 else 0.45) * math.sin(a))
               for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    elif kind == "cross":
        a = 0.33
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a),
               (-a, -a)]
    elif kind == "heart":
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        hx = 16 * np.sin(t) ** 3
        hy = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = list(zip(hx / 17, (hy + 2) / 17))
    else:
        raise ValueError(kind)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (px * ca - py * sa), cy + r * (px * sa + py * ca)) for px, py in pts]


def shape_alpha(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """float32[size, size] coverage of one shape, from a 4x supersampled drawing."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    if kind in ("circle", "ring"):
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
        if kind == "ring":
            h = r * 0.55
            draw.ellipse([(cx - h) * s, (cy - h) * s, (cx + h) * s, (cy + h) * s], fill=0)
    else:
        draw.polygon([(px * s, py * s) for px, py in _polygon(kind, cx, cy, r, angle)], fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), np.float32) / 255.0


def _stuff_layout(rng: np.random.Generator, size: int) -> tuple[list[str], np.ndarray]:
    """Stuff names and an int map of which covers each pixel: a ground, with sky above a wavy horizon 45% of
    the time."""
    ground = str(rng.choice(GROUNDS))
    if rng.random() < 0.45:
        x = np.arange(size)
        horizon = (size * rng.uniform(0.25, 0.5)
                   + rng.uniform(1, 4) * np.sin(x / rng.uniform(6, 20) + rng.uniform(0, 6.3)))
        label = (np.arange(size)[:, None] >= horizon[None, :]).astype(np.int64)   # 0 sky, 1 ground
        return ["sky", ground], label
    return [ground], np.zeros((size, size), np.int64)


def _colour(rng: np.random.Generator, avoid: set[str]) -> str:
    return str(rng.choice([c for c in COLOURS if c not in avoid]))


def _draw_thing(rng: np.random.Generator, image: np.ndarray, size: int,
                closeup: bool) -> tuple[np.ndarray, Category, str, float, np.ndarray]:
    """One thing drawn over `image`: (the image, its category, colour, radius, and its full mask)."""
    category: Category = THINGS[int(rng.integers(len(THINGS)))]
    if closeup:
        r = size * rng.uniform(0.28, 0.42)
        cx, cy = size * rng.uniform(0.4, 0.6, 2)
    else:
        r = size * float(rng.choice([rng.uniform(0.06, 0.11), rng.uniform(0.11, 0.22)]))
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
    alpha = shape_alpha(category.name, size, cx, cy, r, rng.uniform(0, 2 * math.pi))
    colour = _colour(rng, set())
    rgb = np.array(COLOURS[colour], np.float32) + rng.normal(0, 8, 3)
    # a soft light gradient and fine grain, so a thing is not one flat colour
    gx, gy = rng.normal(0, 0.25, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    shade = 1 + (gx * (xx - cx) + gy * (yy - cy)) / max(r, 1) * 0.25
    fill = np.clip(rgb * shade[..., None] + rng.normal(0, 5, (size, size, 1)), 0, 255)
    image = image * (1 - alpha[..., None]) + fill * alpha[..., None]
    return image, category, colour, r, alpha >= 0.5


def render_scene(rng: np.random.Generator, size: int = 128, closeup_rate: float = 0.2,
                 plain_rate: float = 0.0) -> Scene:
    """`plain_rate`: how often the things lie on a plain grey backdrop instead of stuff, as in stock photos
    ("isolated on grey"); such a backdrop has no ground-truth category, so worlds with ground truth use 0."""
    if rng.random() < plain_rate:
        names, label = [], np.zeros((size, size), np.int64)
        grey = rng.uniform(100, 200)
        image = np.full((size, size, 3), grey, np.float32) + rng.normal(0, 3, (size, size, 1))
    else:
        names, label = _stuff_layout(rng, size)
        image = np.zeros((size, size, 3), np.float32)
    for i, name in enumerate(names):
        image = np.where((label == i)[..., None], texture(name, rng, size, size), image)

    closeup = rng.random() < closeup_rate
    count = 1 if closeup else int(rng.integers(1, 6))
    things: list[Instance] = []
    full_areas: list[float] = []
    for _ in range(count):
        image, category, colour, r, mask = _draw_thing(rng, image, size, closeup)
        for earlier in things:
            earlier.mask &= ~mask
        size_word = "large" if r >= size * 0.2 else ("small" if r < size * 0.09 else None)
        things.append(Instance(category, mask, colour=colour, size_word=size_word))
        full_areas.append(float(mask.sum()))

    kept = []
    for inst, full in zip(things, full_areas):
        inst.visible_fraction = float(inst.mask.sum()) / max(full, 1.0)
        if inst.mask.sum() >= MIN_VISIBLE_PIXELS:
            kept.append(inst)
    covered = np.zeros((size, size), bool)
    for inst in things:
        covered |= inst.mask
    stuff = []
    for i, name in enumerate(names):
        mask = (label == i) & ~covered
        if mask.sum() >= MIN_VISIBLE_PIXELS:
            stuff.append(Instance(BY_NAME[name], mask))

    blur = rng.uniform(0, 0.8)
    if blur > 0.2:
        image = gaussian_filter(image, (blur, blur, 0))
    image = image + rng.normal(0, rng.uniform(2, 7), image.shape)
    return Scene(np.clip(image, 0, 255).astype(np.uint8), kept, stuff, closeup, names[-1] if names else "plain")
