"""Small datasets for controlled experiments: made procedurally, nothing downloaded.

Each generator is deterministic in its ``seed`` and returns a :class:`Split` of tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange, reduce

__all__ = ["Split", "context_bars", "cued_bars", "cue_ranked_first", "same_shapes", "side_by_side", "SHAPES", "cluttered_scenes", "GLYPHS", "PALETTE", "digits", "corrupt", "CORRUPTIONS"]


@dataclass(frozen=True)
class Split:
    """Train and test tensors of one task."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    description: str = ""

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        return (
            f"Split(train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"classes={self.num_classes}, {self.description!r})"
        )


def _bars(n: int, size: int, bar: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One bright bar per image, horizontal (0) or vertical (1), at a random place."""
    orient = torch.randint(0, 2, (n,), generator=gen)
    pos = torch.randint(0, size - bar + 1, (n, 2), generator=gen)
    img = torch.zeros(n, size, size)
    for i in range(n):
        r, c = int(pos[i, 0]), int(pos[i, 1])
        if orient[i] == 0:
            img[i, r, c : c + bar] = 1.0
        else:
            img[i, r : r + bar, c] = 1.0
    return img, orient


def context_bars(
    n_train: int = 2000,
    n_test: int = 1000,
    *,
    size: int = 16,
    bar: int = 5,
    context_shift: float = 0.3,
    noise: float = 1.0,
    bar_noise: float = 0.3,
    seed: int = 0,
) -> Split:
    """A task where a feature's meaning depends on global context: label = orientation XOR context.

    Each image has two channels. Channel 0 holds a bar, horizontal or vertical, plus weak
    noise (``bar_noise``): the orientation is easy to see locally.
    Channel 1 is pure noise whose *mean* is ``+context_shift`` or ``-context_shift`` over the
    whole image: the context. The label is ``orientation XOR context``.

    At ``noise=1`` and ``context_shift=0.3`` one pixel says almost nothing about the context
    (signal-to-noise 0.3), a 3×3 window little more, but the mean over 16×16 pixels says it
    with a signal-to-noise ratio of about 5. A network whose units see only a small window
    must guess the context locally; a mechanism with a global squeeze (SE and its family) can
    measure it and switch the orientation features on or off accordingly.
    """
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    img, orient = _bars(n, size, bar, gen)
    context = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, 2, size, size, generator=gen)
    x[:, 0] = x[:, 0] * bar_noise + img
    x[:, 1] *= noise
    x[:, 1] += (2 * context.float() - 1).view(n, 1, 1) * context_shift
    y = orient ^ context
    return Split(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], 2,
        f"context_bars: orientation XOR global context, {size}x{size}, seed {seed}",
    )


def cued_bars(
    n_train: int = 2000,
    n_test: int = 1000,
    *,
    size: int = 16,
    bar: int = 4,
    distractors: int = 5,
    cue: float = 0.5,
    noise: float = 0.6,
    seed: int = 0,
) -> Split:
    """A task where *where* matters: label = orientation of the one bar that is cued.

    Channel 0 holds ``1 + distractors`` bars, each horizontal or vertical at random, at
    non-overlapping places. Channel 1 holds a soft blob (amplitude ``cue``) centred on one of
    them, the target. Both channels carry Gaussian noise (``noise``). The label is the target's orientation (0 horizontal, 1 vertical); the
    distractors' orientations are random, so a network that pools over the whole image sees
    the target's orientation diluted among ``distractors`` others. A spatial gate that
    keeps the cued place and suppresses the rest removes the distractors before pooling.

    With the defaults (weak cue, strong noise) the small baseline network of the course
    reaches about 0.7 test accuracy, leaving room for a mechanism to help. (With ``cue=1``,
    ``noise=0.3`` a plain network solves it: a ReLU can form "bar and cue" locally.)
    """
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    k = 1 + distractors
    x = torch.randn(n, 2, size, size, generator=gen) * noise
    y = torch.empty(n, dtype=torch.long)
    cells = size // bar  # place bars on a coarse grid so they never overlap
    if cells * cells < k:
        raise ValueError(f"cued_bars expected room for {k} bars of length {bar} in {size}x{size}, got {cells * cells}")
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    for i in range(n):
        slots = torch.randperm(cells * cells, generator=gen)[:k]
        orients = torch.randint(0, 2, (k,), generator=gen)
        for j in range(k):
            r0, c0 = int(slots[j]) // cells * bar, int(slots[j]) % cells * bar
            off = int(torch.randint(0, bar, (1,), generator=gen))
            if orients[j] == 0:
                x[i, 0, r0 + off, c0 : c0 + bar] += 1.0
            else:
                x[i, 0, r0 : r0 + bar, c0 + off] += 1.0
            if j == 0:
                cy, cx = r0 + (bar - 1) / 2, c0 + (bar - 1) / 2
                x[i, 1] += cue * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (bar / 2) ** 2))
        y[i] = orients[0]
    return Split(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], 2,
        f"cued_bars: orientation of the cued bar among {distractors} distractors, {size}x{size}, seed {seed}",
    )


def cue_ranked_first(maps: torch.Tensor, clean: torch.Tensor, *, bar: int = 4) -> float:
    """How often a spatial map is highest on the cued bar of ``cued_bars``, among all its bars.

    ``cued_bars`` places its bars in the cells of a grid of ``bar`` × ``bar`` pixels. With the
    noise-free images ``clean`` (``cued_bars(..., noise=0.0)`` with the same seed and sizes: the
    same bars and cue), the map is averaged inside every cell that holds a bar, and an image counts
    when the cued bar's cell has the highest average. Chance is one over the number of bars.

    Args:
        maps: ``(N, H, W)`` spatial weights, one map per image.
        clean: ``(N, 2, H, W)`` the same images without noise (channel 0 bars, channel 1 cue).
        bar: the bar length of ``cued_bars``, which is its grid's cell size.

    Returns:
        The fraction of the ``N`` images whose map ranks the cued bar first.
    """
    if clean.dim() != 4 or clean.shape[1] != 2 or maps.shape != (clean.shape[0], *clean.shape[2:]):
        raise ValueError(f"cue_ranked_first expected maps (N, H, W) and clean images (N, 2, H, W), "
                         f"got {tuple(maps.shape)} and {tuple(clean.shape)}")
    if clean.shape[2] % bar or clean.shape[3] % bar:
        raise ValueError(f"cue_ranked_first expected H and W divisible by bar={bar}, got {tuple(clean.shape[2:])}")

    def cells(m: torch.Tensor) -> torch.Tensor:  # (N, H, W) -> (N, cells): the mean in each cell
        return reduce(m, "n (gy y) (gx x) -> n (gy gx)", "mean", y=bar, x=bar)

    has_bar = cells(clean[:, 0].abs()) > 0
    cue_cell = cells(clean[:, 1]).argmax(1)
    if not has_bar[torch.arange(len(cue_cell)), cue_cell].all():
        raise ValueError("cue_ranked_first expected noise-free cued_bars images (the cue on a bar), "
                         "got images where the cue's cell holds no bar")
    ranked = cells(maps).masked_fill(~has_bar, -float("inf"))  # compare the bar cells only
    return (ranked.argmax(1) == cue_cell).double().mean().item()


#: The 3 × 3 shapes of :func:`same_shapes`, by name. Each has five lit pixels, so that no shape
#: can be told from another by its brightness alone.
SHAPES: dict[str, torch.Tensor] = {
    "plus": torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float32),
    "cross": torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.float32),
    "corner": torch.tensor([[1, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=torch.float32),
    "tee": torch.tensor([[1, 1, 1], [0, 1, 0], [0, 1, 0]], dtype=torch.float32),
}


def same_shapes(
    n_train: int = 2000,
    n_test: int = 1000,
    *,
    size: int = 12,
    min_distance: int = 8,
    noise: float = 0.3,
    kinds: int = 2,
    colours: bool = False,
    seed: int = 0,
    return_positions: bool = False,
) -> Split | tuple[Split, torch.Tensor]:
    """A task that needs long-range context: are the two shapes in the image the same shape?

    Each image holds two 3 × 3 shapes of the first ``kinds`` of :data:`SHAPES` (half of the
    images two of the same shape, half two different ones), at random places whose top-left
    corners are at least ``min_distance`` pixels apart along rows or columns (Chebyshev
    distance), in channel 0 (or, with ``colours``, each in one of the two channels at random, a
    colour that does not matter for the label), plus Gaussian noise (``noise``) on both
    channels. The label is 1 when the shapes are the same.

    With the defaults (12 × 12, ``min_distance=8``) the two shapes span at least 11 pixels, more
    than Part III's network sees with its convolutions alone (``TinyNet`` with widths
    (16, 32, 32) and a 2 × 2 pool after the second block: a receptive field of 10 × 10), and
    its global average pooling only says which shapes are present, not whether there are two of
    one kind (two kinds: "same" is "the plus detector fired 0 or 2 times", not a linear function
    of what pooling returns). A module that lets every position look at every other can compare
    the two shapes; one that gates with pooled statistics (SE) could compute the non-linearity
    after its own pooling. ``experiments.protocol("selfattn")`` measures which happens.

    With ``return_positions`` also returns the ``(N, 2, 2)`` top-left corners (row, column) of
    the two shapes of every image (train then test), for pictures of where attention looks.
    """
    if size < 3 or min_distance > size - 3:
        raise ValueError(f"same_shapes expected size >= 3 and min_distance <= size - 3, got size={size}, "
                         f"min_distance={min_distance}")
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    if not 2 <= kinds <= len(SHAPES):
        raise ValueError(f"same_shapes expected kinds between 2 and {len(SHAPES)}, got {kinds}")
    shapes = torch.stack(list(SHAPES.values())[:kinds])  # (S, 3, 3)
    k = len(shapes)
    x = torch.randn(n, 2, size, size, generator=gen) * noise
    y = torch.randint(0, 2, (n,), generator=gen)
    first = torch.randint(0, k, (n,), generator=gen)
    other = (first + torch.randint(1, k, (n,), generator=gen)) % k  # a different shape, uniformly
    second = torch.where(y == 1, first, other)
    colours = torch.randint(0, 2, (n, 2), generator=gen) if colours else torch.zeros(n, 2, dtype=torch.long)
    corners = torch.empty(n, 2, 2, dtype=torch.long)
    for i in range(n):
        while True:  # rejection sampling of two far-apart places
            p = torch.randint(0, size - 2, (2, 2), generator=gen)
            if int((p[0] - p[1]).abs().max()) >= min_distance:
                break
        corners[i] = p
        for j, s in enumerate((int(first[i]), int(second[i]))):
            r, c = int(p[j, 0]), int(p[j, 1])
            x[i, int(colours[i, j]), r : r + 3, c : c + 3] += shapes[s]
    split = Split(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], 2,
        f"same_shapes: are two far-apart 3x3 shapes the same?, {size}x{size}, seed {seed}",
    )
    return (split, corners) if return_positions else split


def side_by_side(
    n_train: int = 1500,
    n_test: int = 1000,
    *,
    size: int = 24,
    distance: int = 12,
    jitter: int = 2,
    noise: float = 0.3,
    shape: str = "plus",
    seed: int = 0,
    return_positions: bool = False,
) -> Split | tuple[Split, torch.Tensor]:
    """A task about *where*: are the two shapes side by side, or one above the other?

    Each image (one channel, ``size`` × ``size``) holds two copies of the same 3 × 3 shape of
    :data:`SHAPES`, plus Gaussian noise (``noise``). The second copy's top-left corner is
    ``distance`` pixels from the first's along one axis (either way) and at most ``jitter``
    pixels off along the other. The label is 1 when the copies are ``distance`` apart along the
    columns (side by side), 0 when along the rows (one above the other).

    The image is a torus: the first corner is uniform over all ``size²`` pixels, and a shape that
    crosses the right (bottom) edge continues at the left (top). So every pixel is alike, the
    distribution of the images does not change under a circular shift, and where one shape sits
    says nothing about the label: only where the two sit *relative to each other* does. With
    ``size = 2 * distance`` (the default, 24 and 12) the copies are ``distance`` apart both ways
    round the torus, so "12 to the right" and "12 to the left" are the same pair.

    What each kind of module can and cannot use here, by construction (``tests/test_where.py``
    checks the first two):

    - *Convolutions*: the nearest pixels of the two copies are ``distance - 3`` apart, so a window
      that holds a pixel of each spans ``distance - 1`` pixels or more. The protocol ``where``
      (``size=18, distance=9``: 8 pixels) uses ``TinyNet`` with widths (16, 32, 32), no pool and
      ``padding_mode="circular"`` (zero padding would tell the convolutions where the border
      is): three 3 × 3 convolutions, a 7 × 7 window.
    - *Global statistics* (SE's means, CBAM's maxima, GC's weighted mean): both labels put the
      same two local patterns into the image; moving the second copy from "right of" to "below"
      the first (noise and all) permutes the positions and keeps every statistic over positions,
      and flips the label.
    - *Attention without positions*: permutation-equivariant, so the same permutation permutes its
      output and the pooled answer stays; with a position term in its logits it can prefer keys
      in the same row. ``chapters/selfattn/where.md`` asserts both on a constructed pair, and
      reads the stored five-seed comparison of every module of Parts I–IV on the task.

    With ``return_positions`` also returns the ``(N, 2, 2)`` top-left corners (row, column) of
    the two copies (train then test; the second corner taken modulo ``size``).
    """
    if shape not in SHAPES:
        raise ValueError(f"side_by_side expected shape in {sorted(SHAPES)}, got {shape!r}")
    if distance < 3 or 2 * distance > size:
        raise ValueError(f"side_by_side expected 3 <= distance <= size / 2 (the copies do not overlap, and are "
                         f"distance apart the nearer way round the torus), got size={size}, distance={distance}")
    if not 0 <= jitter < distance - 2:
        raise ValueError(f"side_by_side expected 0 <= jitter < distance - 2 (the two orientations stay apart), "
                         f"got jitter={jitter}, distance={distance}")
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    x = torch.randn(n, 1, size, size, generator=gen) * noise
    y = torch.randint(0, 2, (n,), generator=gen)
    first = torch.randint(0, size, (n, 2), generator=gen)
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    off = torch.randint(-jitter, jitter + 1, (n,), generator=gen)
    along = sign * distance
    step = torch.where(y[:, None] == 1, torch.stack([off, along], 1), torch.stack([along, off], 1))  # (row, col)
    second = (first + step) % size
    stamp = torch.zeros(size, size)
    stamp[:3, :3] = SHAPES[shape]
    for i in range(n):
        for corner in (first[i], second[i]):
            x[i, 0] += torch.roll(stamp, shifts=(int(corner[0]), int(corner[1])), dims=(0, 1))
    split = Split(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], 2,
        f"side_by_side: are two copies of the {shape}, {distance} apart, side by side or one above the other?, "
        f"{size}x{size} torus, seed {seed}",
    )
    return (split, torch.stack([first, second], 1)) if return_positions else split


#: 5 × 5 glyphs of :func:`cluttered_scenes`, by name (their order is the label's ``kind``).
GLYPHS: dict[str, torch.Tensor] = {k: torch.tensor(v, dtype=torch.float32) for k, v in {
    "plus": [[0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0]],
    "cross": [[1, 0, 0, 0, 1], [0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 0, 0, 0, 1]],
    "ring": [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
    "tee": [[1, 1, 1, 1, 1], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0]],
}.items()}

#: The colours of :func:`cluttered_scenes` (RGB), the target's first. The other five all contain
#: some green or blue, and three of them contain red too.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0), "magenta": (1.0, 0.0, 1.0), "white": (1.0, 1.0, 1.0),
}


def cluttered_scenes(
    n_train: int = 4000,
    n_test: int = 1000,
    *,
    distractors: int = 4,
    strokes: int = 8,
    noise: float = 0.3,
    seed: int = 0,
    return_positions: bool = False,
) -> Split | tuple[Split, torch.Tensor]:
    """A 32 × 32 colour task that needs *what* and *where*: which glyph is the red one, and in which half?

    Each RGB image holds ``1 + distractors`` glyphs of :data:`GLYPHS` (5 × 5: plus, cross, ring,
    tee), one per cell of a 4 × 4 grid of 8-pixel cells, each at a random offset in its cell.
    The target is drawn in pure red; every distractor in one of the other colours of
    :data:`PALETTE` (green, blue, yellow, magenta, white: three of the five contain red, so the red
    channel alone does not find the target; red *without* green and blue does). ``strokes``
    straight lines of 2 to 4 pixels in random colours of the palette, red included, lie anywhere
    (clutter: locally a red stroke looks like part of a red glyph), drawn over the glyphs by a
    per-channel maximum; then Gaussian noise (``noise``) on every pixel.

    The label, of 8 classes, is ``2 · kind + half``: ``kind`` the target's glyph (its index in
    :data:`GLYPHS`), ``half`` 1 when its centre is in the right half of the image (column ≥ 16),
    0 in the left. The distractors' kinds are random, so pooling the whole image mixes the
    target's glyph with four others; the half is a position, which a convolution sees only
    through the zero padding at the border.

    With ``return_positions`` also returns the ``(N, 1 + distractors, 2)`` top-left corners
    (row, column) of the glyphs, the target's first (train then test).
    """
    if not 0 <= distractors <= 15:
        raise ValueError(f"cluttered_scenes expected 0 <= distractors <= 15 (16 cells), got {distractors!r}")
    if strokes < 0 or noise < 0:
        raise ValueError(f"cluttered_scenes expected strokes >= 0 and noise >= 0, got {strokes!r} and {noise!r}")
    gen = torch.Generator().manual_seed(seed)
    n, k, size = n_train + n_test, 1 + distractors, 32
    glyphs = torch.stack(list(GLYPHS.values()))  # (4, 5, 5)
    colours = torch.tensor(list(PALETTE.values()))  # (6, 3)
    cells = torch.argsort(torch.rand(n, 16, generator=gen), dim=1)[:, :k]
    corners = torch.stack([cells // 4 * 8, cells % 4 * 8], -1) + torch.randint(0, 4, (n, k, 2), generator=gen)
    kinds = torch.randint(0, len(GLYPHS), (n, k), generator=gen)
    paint = torch.cat([torch.zeros(n, 1, dtype=torch.long), torch.randint(1, len(PALETTE), (n, k - 1), generator=gen)], 1)
    s_len = torch.randint(2, 5, (n, strokes), generator=gen)
    s_dir = torch.randint(0, 4, (n, strokes), generator=gen)  # right, down, down-right, up-right
    s_at = torch.randint(0, size, (n, strokes, 2), generator=gen)
    s_col = torch.randint(0, len(PALETTE), (n, strokes), generator=gen)
    steps = torch.tensor([[0, 1], [1, 0], [1, 1], [-1, 1]])
    # Paint by a per-pixel maximum (every value is >= 0 before the noise, so painting 0 changes
    # nothing, and the order of the strokes and glyphs does not matter): one scatter for all images.
    off = torch.arange(5)
    g_rows = corners[..., 0, None, None] + off[:, None]  # (n, k, 5, 1)
    g_cols = corners[..., 1, None, None] + off  # (n, k, 1, 5)
    g_at = (g_rows * size + g_cols).reshape(n, 1, -1).expand(n, 3, -1)  # (n, 3, k * 25)
    g_val = rearrange(colours[paint][..., None, None] * glyphs[kinds][:, :, None], "n k c a b -> n c (k a b)")
    t = torch.arange(4)
    rr = s_at[..., 0, None] + t * steps[s_dir][..., 0, None]  # (n, strokes, 4)
    cc = s_at[..., 1, None] + t * steps[s_dir][..., 1, None]
    inside = (t < s_len[..., None]) & (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
    s_at_flat = torch.where(inside, rr * size + cc, 0).reshape(n, 1, -1).expand(n, 3, -1)
    s_val = rearrange(colours[s_col][:, :, None, :] * inside[..., None], "n s t c -> n c (s t)")
    x = torch.zeros(n, 3, size * size)
    x.scatter_reduce_(2, torch.cat([g_at, s_at_flat], 2), torch.cat([g_val, s_val], 2), reduce="amax")
    x = x.reshape(n, 3, size, size)
    x = x + noise * torch.randn(x.shape, generator=gen)
    y = 2 * kinds[:, 0] + (corners[:, 0, 1] + 2 >= size // 2).long()
    split = Split(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], 2 * len(GLYPHS),
        f"cluttered_scenes: which glyph is red, and in which half? {distractors} distractors, {strokes} strokes, "
        f"32x32 RGB, seed {seed}",
    )
    return (split, corners) if return_positions else split


def digits(*, test_fraction: float = 0.3, seed: int = 0) -> Split:
    """scikit-learn's 1,797 8×8 handwritten digits (shipped inside scikit-learn), scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("attncourse.data.digits needs scikit-learn: pip install scikit-learn") from err
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return Split(x[tr], y[tr], x[te], y[te], 10, f"sklearn digits 8x8, seed {seed}")


#: The corruptions :func:`corrupt` applies (the two of ImageNet-C's families that make sense on
#: small synthetic and 8 x 8 images: additive noise and blur).
CORRUPTIONS = ("noise", "blur")


def corrupt(x: torch.Tensor, kind: str, severity: float, *, seed: int = 0, padding_mode: str = "zeros") -> torch.Tensor:
    """A corrupted copy of the images ``x`` ``(N, C, H, W)``, for a robustness test after training.

    ``kind="noise"``: Gaussian noise of standard deviation ``severity`` added to every pixel (seeded
    by ``seed``, so every network sees the same corrupted set). ``kind="blur"``: a Gaussian blur of
    standard deviation ``severity`` pixels, each channel on its own, with a kernel of side
    ``2·ceil(2·severity) + 1`` normalised to sum 1, the image padded with zeros or, with
    ``padding_mode="circular"`` (the torus of :func:`side_by_side`), wrapped around. Hendrycks and
    Dietterich's ImageNet-C (ICLR 2019, arXiv:1903.12261) has both families among its fifteen.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"corrupt expected kind to be one of {list(CORRUPTIONS)}, got {kind!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{x.dim()}-D {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"corrupt expected a floating-point (N, C, H, W) tensor, got {got}")
    if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not severity > 0:
        raise ValueError(f"corrupt expected a positive severity, got {severity!r}")
    if padding_mode not in ("zeros", "circular"):
        raise ValueError(f"corrupt expected padding_mode 'zeros' or 'circular', got {padding_mode!r}")
    if kind == "noise":
        gen = torch.Generator().manual_seed(seed)
        return x + severity * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    r = math.ceil(2 * severity)
    g = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * severity**2))
    g = g / g.sum()
    c = x.shape[1]
    k = (g[:, None] * g[None, :]).expand(c, 1, 2 * r + 1, 2 * r + 1)
    if padding_mode == "circular":
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r, r, r, r), mode="circular"), k, groups=c)
    return torch.nn.functional.conv2d(x, k, padding=r, groups=c)
