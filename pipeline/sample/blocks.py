"""Rendering one epoch of the sample in row blocks, in flat memory (county-sized scenes).

:class:`BlockRenderer` gives the rows ``o0:o1`` of an epoch on the grid its files are
written on (:meth:`Layout.epoch_frame <pipeline.sample.scene.Layout.epoch_frame>`), never
the whole epoch: the scene is painted for the source rows the block needs plus a halo, blurred,
moved onto the epoch's grid (misregistration, and reprojection when the later epoch is in
another CRS) and given the epoch's radiometry. Memory is a few copies of one block.

It follows the whole-epoch renderer (:func:`pipeline.sample.scene.render_epoch`) step by
step but draws its random texture and sensor noise in fixed 64-row chunks (so a block's
values do not depend on the block size) and normalises the texture by its expected standard
deviation instead of the measured one. Pure: nothing here opens a file.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely
from affine import Affine
from rasterio import features
from rasterio.warp import Resampling, reproject
from scipy import ndimage

from pipeline.errors import ConfigError
from pipeline.sample.scene import (
    _SHADOW_FACTOR,
    Layout,
    _object_tables,
    wave_parameters,
)

CHUNK_ROWS = 64
"""Rows per chunk of random texture and noise (fixed: values never depend on the blocks)."""
_TEX_SIGMA = 1.0
_TEX_HALO = 4  # scipy's Gaussian radius: int(4.0 * sigma + 0.5)
_BLUR_SIGMA = 0.5
_BLUR_HALO = 2
_RESAMPLE_ROWS = 32


class BlockRenderer:
    """Rows of one epoch of ``layout`` on that epoch's grid, block by block.

    Parameters
    ----------
    layout : Layout
    epoch : int
        0 (first) or 1 (second).
    """

    def __init__(self, layout: Layout, epoch: int) -> None:
        if epoch not in (0, 1):
            raise ConfigError(f"epoch = {epoch!r}; expected 0 (first) or 1 (second)")
        self.layout = layout
        self.epoch = epoch
        self.scene = layout.frame
        self.out = layout.epoch_frame(epoch)
        self.n_bands = len(layout.options.band_names)
        obj = layout.objects
        present = np.flatnonzero(obj.cls[epoch] >= 0)
        self._ids = present[present > 0]  # object 0 is the background
        self._tree = shapely.STRtree(obj.geoms[self._ids])
        shadows = np.asarray(layout.shadows[epoch], dtype=object)
        self._shadows = shadows[~shapely.is_empty(shadows)] if len(shadows) else shadows
        self._shadow_tree = shapely.STRtree(self._shadows)
        self._tables = _object_tables(obj, epoch)
        self._lowfreq = _plane_waves(
            np.random.default_rng([layout.seed, 20]), (150.0, 800.0), self.scene.res
        )
        self._haze = _plane_waves(
            np.random.default_rng([layout.seed, 21 + epoch]), (2500.0, 6000.0), self.out.res
        )
        self._tex_sd = np.float32((_gauss_weights(_TEX_SIGMA) ** 2).sum())  # sd of filtered noise
        self._rad = layout.radiometry[epoch]
        self._moved = self.out != self.scene or self._rad.shift_px != (0.0, 0.0)
        if self._moved:
            self._to_scene = pyproj.Transformer.from_crs(
                self.out.crs, self.scene.crs, always_xy=True
            )
        nodata = layout.nodata[epoch]
        if nodata is not None and self.out.crs != self.scene.crs:
            to_out = pyproj.Transformer.from_crs(self.scene.crs, self.out.crs, always_xy=True)
            nodata = shapely.transform(nodata, lambda xy: np.column_stack(to_out.transform(*xy.T)))
        self._nodata = nodata

    # ------------------------------------------------------------------ public
    def rows(self, o0: int, o1: int) -> np.ndarray:
        """uint16 ``(bands, o1 - o0, width)`` of the epoch's grid; 0 = nodata."""
        if not 0 <= o0 < o1 <= self.out.height:
            raise ConfigError(f"rows {o0}:{o1}; expected 0 <= o0 < o1 <= {self.out.height}")
        radiance = self._moved_rows(o0, o1) if self._moved else self._blurred(o0, o1)
        return self._sensor(radiance, o0, o1)

    # ------------------------------------------------------------------ steps
    def _moved_rows(self, o0: int, o1: int) -> np.ndarray:
        """The blurred scene moved onto the epoch's grid (shift, reprojection), bilinear.

        Where the grids are related by an affine map over the block (a shift, or two
        transverse Mercator projections on the same central meridian, as Gauss-Krüger and
        UTM here) it resamples with :func:`scipy.ndimage.affine_transform`; otherwise with
        GDAL's warper (:func:`rasterio.warp.reproject`).
        """
        out, scene = self.out, self.scene
        n = o1 - o0
        matrix, offset, exact = self._pixel_map(o0, o1)
        corners = np.array([[0, 0], [0, out.width], [n, 0], [n, out.width]], dtype=float)
        src_rows = (corners @ matrix.T + offset)[:, 0]
        s0 = max(0, int(np.floor(src_rows.min())) - 2)
        s1 = min(scene.height, int(np.ceil(src_rows.max())) + 3)
        dst = np.full((self.n_bands, n, out.width), np.nan, dtype=np.float32)
        if s1 <= s0:
            return dst
        src = self._blurred(s0, s1)
        if not exact:
            dy, dx = self._rad.shift_px
            reproject(
                source=src,
                destination=dst,
                src_transform=scene.transform @ Affine.translation(dx, s0 + dy),
                src_crs=scene.crs,
                src_nodata=np.nan,
                dst_transform=out.transform @ Affine.translation(0, o0),
                dst_crs=out.crs,
                dst_nodata=np.nan,
                resampling=Resampling.bilinear,
            )
            return dst
        j = np.arange(out.width, dtype=float)[None, :]
        for a in range(0, n, _RESAMPLE_ROWS):  # a few rows at a time: small index arrays
            i = np.arange(a, min(n, a + _RESAMPLE_ROWS), dtype=float)[:, None]
            r = matrix[0, 0] * i + matrix[0, 1] * j + offset[0]
            c = matrix[1, 0] * i + matrix[1, 1] * j + offset[1]
            # outside the scene (more than half a pixel past its edge pixels): nodata
            outside = (r < -1.0) | (r > scene.height) | (c < -1.0) | (c > scene.width)
            part = dst[:, a : a + len(i)]
            _bilinear(src, r - s0, c, part)
            part[:, outside] = np.nan
        return dst

    def _pixel_map(self, o0: int, o1: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """The affine map from block pixel indices ``(i, j)`` (row ``o0 + i``) to scene
        pixel indices (row, col) fitted over the block, and whether it is exact (largest
        error of the fit under 0.01 px)."""
        out, scene = self.out, self.scene
        dy, dx = self._rad.shift_px
        i, j = np.meshgrid(np.linspace(0, o1 - o0 - 1, 5), np.linspace(0, out.width - 1, 17))
        i, j = i.ravel(), j.ravel()
        x = out.x0 + (j + 0.5) * out.res
        y = out.y0 - (o0 + i + 0.5) * out.res
        if self.out.crs != scene.crs:
            x, y = (np.asarray(v) for v in self._to_scene.transform(x, y))
        src = np.column_stack(
            [(scene.y0 - y) / scene.res - 0.5 - dy, (x - scene.x0) / scene.res - 0.5 - dx]
        )
        design = np.column_stack([i, j, np.ones_like(i)])
        coef, *_ = np.linalg.lstsq(design, src, rcond=None)
        err = np.abs(design @ coef - src).max()
        return coef[:2].T.copy(), coef[2].copy(), bool(err < 0.01)

    def _blurred(self, r0: int, r1: int) -> np.ndarray:
        """Scene rows ``r0:r1`` after the 0.5 px Gaussian blur (soft edges)."""
        h0 = max(0, r0 - _BLUR_HALO)
        h1 = min(self.scene.height, r1 + _BLUR_HALO)
        painted = self._painted(h0, h1)
        for b in range(self.n_bands):
            painted[b] = ndimage.gaussian_filter(painted[b], sigma=_BLUR_SIGMA, mode="nearest")
        return painted[:, r0 - h0 : r0 - h0 + (r1 - r0)]

    def _painted(self, r0: int, r1: int) -> np.ndarray:
        """Scene rows ``r0:r1``: object spectra with stripes, texture and shadows."""
        frame, obj = self.scene, self.layout.objects
        w = frame.width
        ids = self._raster(self._tree, obj.geoms[self._ids], self._ids, r0, r1, "int32")
        shadow = self._raster(self._shadow_tree, self._shadows, None, r0, r1, "uint8") > 0
        spec, stripe_amp, tex_amp, lf_amp = self._tables
        rows = np.arange(r0, r1, dtype=np.float32)[:, None]
        cols = np.arange(w, dtype=np.float32)
        along = np.where(obj.orient[ids], cols[None, :], rows)
        e = self.epoch
        stripe = np.sin(
            (2 * np.pi) * along / obj.period[e][ids] + obj.phase[e][ids], dtype=np.float32
        )
        del along
        common = 1.0 + lf_amp[ids] * self._lowfreq(r0, r1, w)
        common += tex_amp[ids] * self._texture(r0, r1)
        dark = np.where(shadow, np.float32(_SHADOW_FACTOR), np.float32(1.0))
        out = np.empty((self.n_bands, r1 - r0, w), dtype=np.float32)
        for b in range(self.n_bands):
            out[b] = spec[:, b][ids] * (common + stripe_amp[:, b][ids] * stripe) * dark
        return out

    def _raster(self, tree, geoms, values, r0: int, r1: int, dtype: str) -> np.ndarray:
        """Rasterize the geometries of ``tree`` that reach rows ``r0:r1`` (painting order)."""
        frame = self.scene
        shape = (r1 - r0, frame.width)
        top = frame.y0 - r0 * frame.res
        box = shapely.box(frame.x0, top - (r1 - r0) * frame.res, frame.bounds[2], top)
        hit = np.sort(tree.query(box, predicate="intersects"))
        if len(hit) == 0:
            return np.zeros(shape, dtype=dtype)
        vals = np.ones(len(hit), dtype=int) if values is None else values[hit]
        return features.rasterize(
            zip(geoms[hit], vals.tolist(), strict=True),
            out_shape=shape,
            transform=frame.transform @ Affine.translation(0, r0),
            fill=0,
            dtype=dtype,
        )

    def _texture(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` of the spatially correlated texture (sigma 1 px, unit sd)."""
        h = self.scene.height
        h0, h1 = max(0, r0 - _TEX_HALO), min(h, r1 + _TEX_HALO)
        noise = _chunked_noise([self.layout.seed, 22], h0, h1, self.scene.width, uniform=True)
        tex = ndimage.gaussian_filter(noise, _TEX_SIGMA)
        tex = tex[r0 - h0 : r0 - h0 + (r1 - r0)]
        tex /= self._tex_sd
        return tex

    def _sensor(self, radiance: np.ndarray, o0: int, o1: int) -> np.ndarray:
        """Gain, offset, haze and noise of the epoch; uint16 with 0 for nodata."""
        rad, out = self._rad, self.out
        hz = 0.5 + 0.5 * self._haze(o0, o1, out.width)
        result = np.empty(radiance.shape, dtype=np.uint16)
        invalid = np.isnan(radiance[0])
        for b in range(self.n_bands):
            v = radiance[b] * np.float32(rad.gain[b]) + np.float32(rad.offset[b])
            v += np.float32(rad.haze[b]) * hz
            noise = _chunked_noise([self.layout.seed, 30 + self.epoch, b], o0, o1, out.width)
            v += noise * np.float32(rad.noise_sd)
            np.nan_to_num(v, copy=False, nan=0.0)
            result[b] = np.clip(np.rint(v), 1, 65535).astype(np.uint16)
        result[:, invalid] = 0
        if self._nodata is not None:
            top = out.y0 - o0 * out.res
            band = shapely.box(out.x0, top - (o1 - o0) * out.res, out.bounds[2], top)
            if shapely.intersects(band, self._nodata):
                mask = features.rasterize(
                    [(self._nodata, 1)],
                    out_shape=(o1 - o0, out.width),
                    transform=out.transform @ Affine.translation(0, o0),
                    fill=0,
                    dtype="uint8",
                )
                result[:, mask > 0] = 0
        return result


# --------------------------------------------------------------------------- helpers
def _chunked_noise(
    key: list[int], r0: int, r1: int, width: int, *, uniform: bool = False
) -> np.ndarray:
    """Float32 noise of mean 0, sd 1 on rows ``r0:r1``: standard normal, or uniform (4 times
    faster to draw; for noise that is smoothed afterwards). Chunk ``k`` (rows
    ``64k:64(k+1)``) is drawn from ``default_rng(key + [k])``: any row range reads the same
    values."""
    c0, c1 = r0 // CHUNK_ROWS, (r1 - 1) // CHUNK_ROWS + 1
    shape = (CHUNK_ROWS, width)
    parts = []
    for k in range(c0, c1):
        rng = np.random.default_rng([*key, k])
        if uniform:
            u = rng.random(shape, dtype=np.float32)
            u -= np.float32(0.5)
            u *= np.float32(np.sqrt(12.0))
            parts.append(u)
        else:
            parts.append(rng.standard_normal(shape, dtype=np.float32))
    start = r0 - c0 * CHUNK_ROWS
    return np.concatenate(parts)[start : start + (r1 - r0)]


def _bilinear(src: np.ndarray, r: np.ndarray, c: np.ndarray, dst: np.ndarray) -> None:
    """Bilinear samples of ``src`` (bands, rows, cols) at fractional pixel indices ``r``,
    ``c`` into ``dst``; points past the edges take the edge values."""
    _, h, w = src.shape
    r = np.clip(r, 0.0, h - 1.0)
    c = np.clip(c, 0.0, w - 1.0)
    r0 = np.minimum(r.astype(np.int64), max(h - 2, 0))
    c0 = np.minimum(c.astype(np.int64), max(w - 2, 0))
    fr = (r - r0).astype(np.float32)
    fc = (c - c0).astype(np.float32)
    idx = r0 * w + c0
    del r, c, r0, c0
    down = w if h > 1 else 0
    right = 1 if w > 1 else 0
    for b in range(src.shape[0]):
        flat = src[b].ravel()
        top = np.take(flat, idx)
        top += fc * (np.take(flat, idx + right) - top)
        low = np.take(flat, idx + down)
        low += fc * (np.take(flat, idx + down + right) - low)
        top += fr * (low - top)
        dst[b] = top


def _plane_waves(rng: np.random.Generator, wavelengths_m: tuple[float, float], res: float):
    """The smooth field of :func:`pipeline.sample.scene._smooth_field` (same draws, same
    waves), evaluated separably: ``sin(a + b) = sin a cos b + cos a sin b`` over rows and
    columns, so no sine is taken per pixel."""
    amp, lam, theta, phase = wave_parameters(rng, wavelengths_m, res)

    def field(r0: int, r1: int, width: int) -> np.ndarray:
        rows = np.arange(r0, r1, dtype=float)[:, None]
        cols = np.arange(width, dtype=float)[None, :]
        out = np.zeros((r1 - r0, width), dtype=np.float32)
        for a, lm, th, ph in zip(amp, lam, theta, phase, strict=True):
            kr, kc = 2 * np.pi / lm * np.cos(th), 2 * np.pi / lm * np.sin(th)
            row_arg, col_arg = kr * rows + ph, kc * cols
            s_r = (a * np.sin(row_arg)).astype(np.float32)
            c_r = (a * np.cos(row_arg)).astype(np.float32)
            out += s_r * np.cos(col_arg).astype(np.float32)
            out += c_r * np.sin(col_arg).astype(np.float32)
        np.clip(out, -1.5, 1.5, out=out)
        out /= np.float32(1.5)
        return out

    return field


def _gauss_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The normalised 1-d Gaussian kernel scipy's ``gaussian_filter`` uses."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    phi = np.exp(-0.5 * (x / sigma) ** 2)
    return phi / phi.sum()
