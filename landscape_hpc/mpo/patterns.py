"""MPO patterns: which cells of the H×W plane should have low loss and which high loss.

A pattern is a boolean array `low_loss` of shape (H, W), row 0 the top of the picture:
True = low-loss cell, False = high-loss cell. Three sources:

    mask=builtin mask.name=ring              # shapes drawn by code (default, tests)
    mask=image mask.path=cat.png             # a picture: dark pixels are low-loss (mask.invert)
    mask=random mask.size=30 mask.fill_prob=0.5 mask.seed=0
    mask=random mask.size=30 mask.fill_prob=0.5 mask.frame=true   # the paper code's layout

`trainable_cells` drops cells whose neighbours all share their class (appendix A): the loss there
follows from the border cells, and skipping them spends the step on the boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from landscape_hpc.errors import UserError, check_choice, check_seed
from landscape_hpc.paths import require_regular

MASK_KINDS = ("builtin", "image", "random")
#: the smallest framed random mask: outer ring, frame, and a 0×0 interior at 4×4
FRAMED_MIN_SIZE = 4
#: the largest mask side: 1024×1024 is a million cells, far beyond the paper's 20–50
MAX_SIDE = 1024
#: the most cells of a mask (issue 33, limits stated): every evaluation of the plane is one
#: engine point per cell, a pass over the held-out data each, so a 10^6-cell mask evaluated for
#: over 30 minutes without a word; 256×256 is far beyond the paper's 20–50 per side
MAX_CELLS = 256 * 256


def _square_size(key: str, size: Any) -> tuple[int, int]:
    """mask.size as (H, W): an int n means n×n, a pair [H, W] is taken as it is."""
    if isinstance(size, int | np.integer):
        shape = (int(size), int(size))
    else:
        try:
            shape = tuple(int(s) for s in size)
        except (TypeError, ValueError):
            shape = ()
    if len(shape) != 2 or min(shape) < 2:
        raise UserError(f"{key}={size!r} must be an int n ≥ 2 (n×n cells) or a pair [H, W] ≥ 2")
    if max(shape) > MAX_SIDE:
        cells = shape[0] * shape[1]
        raise UserError(
            f"{key}={size!r} gives {cells:,} cells, each a model evaluation over the data (and "
            f"a fit over all of them): it would not finish; use at most {MAX_SIDE} per side"
        )
    check_cells(f"{key}={size!r}", shape)
    return shape  # type: ignore[return-value]


def check_cells(what: str, shape: tuple[int, ...]) -> None:
    """A UserError naming `what` (the key and its value) when a mask of `shape` has more than
    MAX_CELLS cells."""
    cells = int(np.prod(shape))
    if cells > MAX_CELLS:
        raise UserError(
            f"{what} gives {cells:,} cells, over the limit of {MAX_CELLS:,} (256×256): "
            "every evaluation of the plane is one engine point per cell, a pass over the "
            f"held-out data each; use at most {MAX_CELLS:,} cells"
        )


def _disk_distance(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell (row, col, radius) in units of the half side, centred on the pattern."""
    h, w = shape
    r = (np.arange(h) - (h - 1) / 2) / (h / 2)
    c = (np.arange(w) - (w - 1) / 2) / (w / 2)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return rr, cc, np.hypot(rr, cc)


def _ring(shape: tuple[int, int]) -> np.ndarray:
    _, _, radius = _disk_distance(shape)
    return (radius > 0.45) & (radius < 0.8)


def _cross(shape: tuple[int, int]) -> np.ndarray:
    rr, cc, _ = _disk_distance(shape)
    return ((np.abs(rr) < 0.25) | (np.abs(cc) < 0.25)) & (np.maximum(abs(rr), abs(cc)) < 0.8)


def _square(shape: tuple[int, int]) -> np.ndarray:
    rr, cc, _ = _disk_distance(shape)
    return np.maximum(np.abs(rr), np.abs(cc)) < 0.5


def _smiley(shape: tuple[int, int]) -> np.ndarray:
    rr, cc, radius = _disk_distance(shape)
    face = (radius > 0.7) & (radius < 0.95)
    eyes = np.hypot(rr + 0.3, np.abs(cc) - 0.33) < 0.16
    mouth = (np.hypot(rr - 0.05, cc) > 0.4) & (np.hypot(rr - 0.05, cc) < 0.58) & (rr > 0.15)
    return face | eyes | mouth


def _stripes(shape: tuple[int, int]) -> np.ndarray:
    _, cc, _ = _disk_distance(shape)
    return np.floor((cc + 1) * 2).astype(int) % 2 == 0


def _checkerboard(shape: tuple[int, int]) -> np.ndarray:
    """4×4 squares, alternating, the top-left one low-loss."""
    rr, cc, _ = _disk_distance(shape)
    return (np.floor((rr + 1) * 2).astype(int) + np.floor((cc + 1) * 2).astype(int)) % 2 == 0


def _corners(shape: tuple[int, int]) -> np.ndarray:
    """Four low-loss islands, one near each corner: low loss far from the origin, high near it
    (the opposite of what a plane gives for free)."""
    rr, cc, _ = _disk_distance(shape)
    return np.hypot(np.abs(rr) - 0.6, np.abs(cc) - 0.6) < 0.3


#: the letter A, drawn by hand: 7 rows × 5 columns, 1 = low-loss
LETTER_A = np.array(
    [
        [0, 0, 1, 0, 0],
        [0, 1, 0, 1, 0],
        [1, 0, 0, 0, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1],
        [1, 0, 0, 0, 1],
    ],
    dtype=bool,
)


def _glyph(glyph: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`glyph` scaled (nearest cell centre) into the pattern, a high-loss margin of a tenth of
    each side around it; at the glyph's own size, the glyph itself."""
    out = np.zeros(shape, dtype=bool)
    index = []
    for n, parts in zip(shape, glyph.shape):
        margin = n // 10
        inner = n - 2 * margin
        centres = (np.arange(inner) + 0.5) * parts / inner
        index.append((margin, np.minimum(np.floor(centres).astype(int), parts - 1)))
    (r0, rows), (c0, cols) = index
    out[r0 : r0 + len(rows), c0 : c0 + len(cols)] = glyph[np.ix_(rows, cols)]
    return out


def _letter_a(shape: tuple[int, int]) -> np.ndarray:
    return _glyph(LETTER_A, shape)


#: the unframed random mask of the builtins: fill 0.5, seed 0 (as mask=random mask.fill_prob=0.5
#: mask.seed=0)
NOISE_FILL, NOISE_SEED = 0.5, 0


def _noise(shape: tuple[int, int]) -> np.ndarray:
    return random_mask(list(shape), NOISE_FILL, NOISE_SEED)


BUILTINS: dict[str, Callable[[tuple[int, int]], np.ndarray]] = {
    "ring": _ring,
    "cross": _cross,
    "square": _square,
    "smiley": _smiley,
    "stripes": _stripes,
    "checkerboard": _checkerboard,
    "corners": _corners,
    "letter_a": _letter_a,
    "noise": _noise,
}


def builtin_mask(name: str, size: Any = 20, prefix: str = "mask.") -> np.ndarray:
    """A shape drawn by code; True = low-loss cell. `prefix`: how messages name the keys
    (the command's mask.name; the library's name=)."""
    check_choice(f"{prefix}name", name, tuple(BUILTINS))
    return BUILTINS[name](_square_size(f"{prefix}size", size))


def random_mask(
    size: Any, fill_prob: float, seed: int, frame: bool = False, prefix: str = "mask."
) -> np.ndarray:
    """Each cell low-loss with probability fill_prob; depends only on (size, fill_prob, seed,
    frame). With `frame`, the layout of the paper's code (loss-patterns,
    `randomly_fill_square`): the outer ring (rows/columns 0 and −1) high-loss, a low-loss frame at
    rows/columns 1 and −2, and only the interior [2:−2, 2:−2] drawn at random."""
    if not 0.0 < float(fill_prob) < 1.0:
        raise UserError(f"{prefix}fill_prob={fill_prob} must lie strictly between 0 and 1")
    shape = _square_size(f"{prefix}size", size)
    rng = np.random.default_rng(check_seed(seed, f"{prefix}seed"))
    if not frame:
        return rng.random(shape) < float(fill_prob)
    if min(shape) < FRAMED_MIN_SIZE:
        raise UserError(
            f"{prefix}frame=true needs {prefix}size of at least {FRAMED_MIN_SIZE}×"
            f"{FRAMED_MIN_SIZE} (an outer ring, a frame and an interior), got {shape[0]}×"
            f"{shape[1]}; raise {prefix}size or set {prefix}frame=false"
        )
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    mask[1 : h - 1, [1, w - 2]] = True  # the low-loss frame: columns 1 and −2 ...
    mask[[1, h - 2], 1 : w - 1] = True  # ... and rows 1 and −2
    mask[2 : h - 2, 2 : w - 2] = rng.random((h - 4, w - 4)) < float(fill_prob)
    return mask


def image_mask(
    path: str | None,
    size: Any = 50,
    threshold: float = 0.5,
    invert: bool = False,
    prefix: str = "mask.",
) -> np.ndarray:
    """A picture downsampled to `size` cells (area average) and thresholded: pixels darker than
    `threshold` (0 = black, 1 = white, transparency composited onto white) are low-loss."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        raise UserError(f"an image mask needs {prefix}path=<PNG or JPG file>")
    file = Path(path).expanduser()
    require_regular(file, f"{prefix}path")  # a FIFO would block PIL's read forever
    try:
        with Image.open(file) as img:
            img.load()
            brightness = image_brightness(img)
    except FileNotFoundError:
        raise UserError(f"{prefix}path={path}: no such file; give an existing PNG or JPG") from None
    except Image.DecompressionBombError as err:
        raise UserError(
            f"{prefix}path={path}: the image is too large to read safely ({err}); give a smaller "
            "PNG or JPG (a mask needs only mask.size pixels per side)"
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(
            f"{prefix}path={path}: not a readable image ({err}); give a PNG or JPG file"
        ) from None
    h, w = _square_size(f"{prefix}size", size)
    plane = Image.fromarray(brightness.astype(np.float32))  # mode F: no rounding to 8 bits
    cells = np.asarray(plane.resize((w, h), Image.Resampling.BOX), dtype=np.float64)  # (H, W)
    low_loss = cells < float(threshold)
    return ~low_loss if invert else low_loss


#: the largest value of each integer grey mode (Pillow's names): 16-bit PNGs open as I;16
_GREY_FULL_SCALE = {"1": 1.0, "L": 255.0, "I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0}
_GREY_FULL_SCALE |= {"I;16N": 65535.0}


def image_brightness(img: Any) -> np.ndarray:
    """A PIL image's brightness (H0, W0) float64 in [0, 1], 0 = black, read at its own bit depth
    (issue 33: a 16-bit PNG converted to RGBA clips every value above 255 to white): 1-bit, 8-
    and 16-bit grey at their full scale, 32-bit integer grey (I) at 16 bits when its values fit
    them, float grey (F) as given; palette, RGB(A), CMYK, ... through RGBA, with ITU-R 601 luma
    (Pillow's "L"). Transparency (LA, PA, RGBA, a palette's) is composited onto white."""
    mode = img.mode
    alpha = None
    if mode in _GREY_FULL_SCALE:
        grey = np.asarray(img, dtype=np.float64) / _GREY_FULL_SCALE[mode]
    elif mode == "I":
        raw = np.asarray(img, dtype=np.float64)
        grey = raw / (255.0 if raw.max(initial=0) <= 255 else 65535.0)
    elif mode == "F":
        grey = np.asarray(img, dtype=np.float64)
    elif mode == "LA":
        pair = np.asarray(img, dtype=np.float64) / 255.0  # (H0, W0, 2)
        grey, alpha = pair[..., 0], pair[..., 1]
    else:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0  # (H0, W0, 4)
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        alpha = rgba[..., 3]
    if alpha is not None:
        grey = alpha * grey + (1.0 - alpha)  # onto white
    return np.clip(np.nan_to_num(grey, nan=1.0), 0.0, 1.0)


def make_mask(cfg: Any) -> np.ndarray:
    """The pattern a MaskConfig describes, checked to hold both classes."""
    check_choice("mask.kind", cfg.kind, MASK_KINDS)
    if cfg.kind == "builtin":
        mask = builtin_mask(cfg.name, cfg.size)
    elif cfg.kind == "random":
        mask = random_mask(cfg.size, cfg.fill_prob, cfg.seed, cfg.frame)
    else:
        mask = image_mask(cfg.path, cfg.size, cfg.threshold, cfg.invert)
    check_both_classes(mask, describe_mask(cfg))
    return mask


def describe_mask(cfg: Any) -> str:
    if cfg.kind == "image":
        return f"mask=image mask.path={cfg.path}"
    if cfg.kind == "random":
        framed = " mask.frame=true" if cfg.frame else ""
        return f"mask=random mask.fill_prob={cfg.fill_prob} mask.seed={cfg.seed}{framed}"
    return f"mask=builtin mask.name={cfg.name}"


def check_both_classes(mask: np.ndarray, what: str, prefix: str = "mask.") -> None:
    """A UserError naming `what` when the pattern lacks one of the classes (eq. 3 needs both)."""
    n_low = int(mask.sum())
    if n_low == 0:
        raise UserError(
            f"{what} has no low-loss cells; use a picture with dark areas, {prefix}invert, "
            f"a larger {prefix}fill_prob or another {prefix}seed"
        )
    if n_low == mask.size:
        raise UserError(
            f"{what} has no high-loss cells; use a picture with light areas, {prefix}invert, "
            f"a smaller {prefix}fill_prob or another {prefix}seed"
        )


def trainable_cells(mask: np.ndarray, skip_interior: bool = True) -> np.ndarray:
    """Cells trained on, (H, W) bool: all of them, or (appendix A) only those with at least one
    neighbour (8-neighbourhood, inside the pattern) of the other class."""
    if not skip_interior:
        return np.ones_like(mask, dtype=bool)
    h, w = mask.shape
    padded = np.pad(mask, 1, mode="edge")  # outside cells copy the edge: no false borders
    border = np.zeros_like(mask, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            border |= padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] != mask
    return border
