"""Procedural materials: small tileable texture images (an atlas) plus shading properties.

Textures are evaluated in world coordinates by the renderer (planar projection on the
dominant axis of the surface normal), so no UV unwrapping is needed and two objects that
share a material show the same texture -- that is how the generator makes classes that
colour alone cannot separate (a box painted like the wall, a table top made of the floor's
wood).
"""

from __future__ import annotations

import colorsys

import numpy as np

TEXTURE_SIZE = 128

KINDS = ('plain', 'plaster', 'wood', 'tiles', 'carpet', 'fabric', 'cardboard', 'metal', 'sky')


def _smooth_noise(rng: np.random.Generator, size: int, cycles: float) -> np.ndarray:
    """Tileable band-limited noise, zero mean and unit std; ``cycles`` = features per tile."""
    white = rng.standard_normal((size, size))
    f = np.fft.fftfreq(size) * size
    rad2 = f[:, None] ** 2 + f[None, :] ** 2
    spec = np.fft.fft2(white) * np.exp(-rad2 / (2.0 * cycles**2))
    out = np.real(np.fft.ifft2(spec))
    return (out - out.mean()) / (out.std() + 1e-9)


def random_colour(
    rng: np.random.Generator, hue=(0.0, 1.0), sat=(0.0, 1.0), val=(0.0, 1.0)
) -> np.ndarray:
    """An RGB colour in [0, 1] drawn uniformly in the given HSV box (hue wraps)."""
    h = rng.uniform(*hue) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val)))


def _texture(kind: str, base: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    base = np.asarray(base, np.float64)
    y, x = np.mgrid[0:n, 0:n] / n
    if kind == 'plain':
        shade = 1.0 + 0.02 * _smooth_noise(rng, n, 6)
    elif kind == 'plaster':
        shade = 1.0 + 0.04 * _smooth_noise(rng, n, 4) + 0.02 * _smooth_noise(rng, n, 24)
    elif kind == 'carpet':
        shade = 1.0 + 0.05 * _smooth_noise(rng, n, 6) + 0.12 * rng.standard_normal((n, n))
    elif kind == 'fabric':
        weave = np.sin(2 * np.pi * x * 32) * np.sin(2 * np.pi * y * 32)
        shade = 1.0 + 0.06 * weave + 0.05 * _smooth_noise(rng, n, 8)
    elif kind == 'cardboard':
        shade = 1.0 + 0.05 * _smooth_noise(rng, n, 10) + 0.03 * rng.standard_normal((n, n))
        if rng.random() < 0.6:  # a strip of tape
            centre = rng.uniform(0.2, 0.8)
            shade = np.where(np.abs(x - centre) < 0.04, shade * 1.25, shade)
    elif kind == 'metal':
        shade = 1.0 + 0.04 * _smooth_noise(rng, n, 3) + 0.02 * np.sin(2 * np.pi * y * 40)
    elif kind == 'wood':
        warp = 0.08 * _smooth_noise(rng, n, 3)
        rings = np.sin(2 * np.pi * (y * rng.integers(4, 9) + warp * 3))
        grain = 0.04 * _smooth_noise(rng, n, 30)
        planks = rng.integers(2, 5)
        plank_id = np.floor(x * planks)
        plank_shade = rng.uniform(0.88, 1.08, planks)[plank_id.astype(int) % planks]
        seam = np.abs(x * planks - np.round(x * planks)) < 0.02
        shade = plank_shade * (1.0 + 0.12 * rings + grain) * np.where(seam, 0.6, 1.0)
    elif kind == 'tiles':
        count = rng.integers(2, 5)
        tx, ty = x * count, y * count
        tile_id = (np.floor(tx) + count * np.floor(ty)).astype(int)
        per_tile = rng.uniform(0.93, 1.07, count * count)[tile_id]
        grout = (np.minimum(tx % 1, 1 - tx % 1) < 0.03) | (np.minimum(ty % 1, 1 - ty % 1) < 0.03)
        shade = per_tile * (1.0 + 0.03 * _smooth_noise(rng, n, 12))
        tex = base[None, None] * shade[..., None]
        grout_col = np.clip(base * 0.55 + 0.15, 0, 1)
        tex[grout] = grout_col
        return np.clip(tex, 0.0, 1.0)
    elif kind == 'sky':
        # view through a window: bright sky over a darker, blurred outside band
        horizon = 0.55 + 0.05 * _smooth_noise(rng, n, 2)[0]
        sky = np.array([0.75, 0.85, 1.0]) * (0.9 + 0.1 * _smooth_noise(rng, n, 3))[..., None]
        ground = (base * 0.6)[None, None] * (1.0 + 0.15 * _smooth_noise(rng, n, 8))[..., None]
        # texture rows grow with world z (the renderer maps +z to +row), so the sky is on top
        return np.clip(np.where((y > horizon[None, :])[..., None], sky, ground), 0, 1)
    else:
        raise ValueError(f'unknown texture kind {kind!r}')
    return np.clip(base[None, None] * shade[..., None], 0.0, 1.0)


class MaterialBank:
    """Grows a texture atlas and per-material properties; index = material id."""

    def __init__(self, rng: np.random.Generator, size: int = TEXTURE_SIZE) -> None:
        self.rng = rng
        self.size = size
        self._textures: list[np.ndarray] = []
        self.scale: list[float] = []  # metres covered by one texture tile
        self.specular: list[float] = []
        self.emissive: list[float] = []  # >0: self-lit, radiance multiplier
        self.ir_dropout: list[float] = []  # extra chance the depth sensor misses it
        self.kinds: list[str] = []

    def add(
        self,
        kind: str,
        colour,
        scale: float = 1.0,
        specular: float = 0.0,
        emissive: float = 0.0,
        ir_dropout: float = 0.0,
    ) -> int:
        """Create a material and return its id."""
        self._textures.append(_texture(kind, colour, self.rng, self.size).astype(np.float32))
        self.scale.append(float(scale))
        self.specular.append(float(specular))
        self.emissive.append(float(emissive))
        self.ir_dropout.append(float(ir_dropout))
        self.kinds.append(kind)
        return len(self._textures) - 1

    def atlas(self) -> np.ndarray:
        """(M, T, T, 3) float32 linear albedo."""
        return np.stack(self._textures)

    # ---- themed draws ---------------------------------------------------------------------
    def paint(self) -> int:
        """Wall paint: light, mostly desaturated."""
        col = random_colour(self.rng, sat=(0.0, 0.25), val=(0.55, 0.95))
        kind = 'plaster' if self.rng.random() < 0.6 else 'plain'
        return self.add(kind, col, scale=self.rng.uniform(1.0, 2.5))

    def wood(self) -> int:
        col = random_colour(self.rng, hue=(0.04, 0.11), sat=(0.35, 0.7), val=(0.25, 0.75))
        return self.add('wood', col, scale=self.rng.uniform(0.6, 1.6), specular=0.08)

    def flooring(self) -> int:
        pick = self.rng.random()
        if pick < 0.45:
            return self.wood()
        if pick < 0.75:
            col = random_colour(self.rng, sat=(0.0, 0.25), val=(0.35, 0.85))
            return self.add('tiles', col, scale=self.rng.uniform(0.6, 1.6), specular=0.15)
        col = random_colour(self.rng, sat=(0.05, 0.6), val=(0.15, 0.6))
        return self.add('carpet', col, scale=self.rng.uniform(0.5, 1.0))

    def furniture(self) -> int:
        """Wood, painted (white/black/grey/colour) or metal."""
        pick = self.rng.random()
        if pick < 0.45:
            return self.wood()
        if pick < 0.7:
            col = random_colour(self.rng, sat=(0.0, 0.1), val=(0.03, 0.95))
            return self.add('plain', col, scale=1.0, specular=0.1)
        if pick < 0.85:
            col = random_colour(self.rng, sat=(0.3, 0.8), val=(0.3, 0.9))
            return self.add('plain', col, scale=1.0, specular=0.1)
        col = random_colour(self.rng, sat=(0.0, 0.08), val=(0.35, 0.75))
        return self.add('metal', col, scale=0.5, specular=0.4)

    def fabric(self) -> int:
        col = random_colour(self.rng, sat=(0.1, 0.75), val=(0.08, 0.8))
        return self.add('fabric', col, scale=self.rng.uniform(0.4, 0.8))

    def cardboard(self) -> int:
        col = random_colour(self.rng, hue=(0.07, 0.11), sat=(0.35, 0.6), val=(0.45, 0.75))
        return self.add('cardboard', col, scale=self.rng.uniform(0.4, 0.8))

    def bright(self) -> int:
        """Saturated plastic (balls, toys, boxes)."""
        col = random_colour(self.rng, sat=(0.55, 1.0), val=(0.45, 1.0))
        return self.add('plain', col, scale=1.0, specular=0.35)

    def glass(self) -> int:
        col = random_colour(self.rng, hue=(0.15, 0.4), sat=(0.2, 0.6), val=(0.3, 0.7))
        return self.add(
            'sky', col, scale=self.rng.uniform(1.5, 3.0), emissive=1.0, ir_dropout=0.85
        )

    def light(self) -> int:
        return self.add('plain', np.array([1.0, 0.97, 0.9]), emissive=1.4)
