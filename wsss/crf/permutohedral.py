"""The dense CRF of :mod:`wsss.crf` in PyTorch, without pydensecrf.

It reproduces pydensecrf's ``DenseCRF2D`` as the project configures it, on CPU or CUDA:

* unary ``-log(clip(prob, 1e-5, 1))`` (``pydensecrf.utils.unary_from_softmax``);
* a Gaussian kernel on ``(x, y) / sxy`` and a bilateral one on ``(x, y) / sxy, (r, g, b) / srgb``,
  both Potts (``compat`` w adds ``w * filter(Q)`` to the label's negative energy), diagonal
  kernels, symmetric normalisation ``n = 1 / sqrt(filter(1) + 1e-20)``, filter = ``n * K(n * Q)``;
* mean field: ``Q = softmax(-unary)``, then per iteration
  ``Q = softmax(-unary + w_g * filter_g(Q) + w_b * filter_b(Q))``.

``K`` is Krähenbühl & Koltun's permutohedral-lattice approximation of the Gaussian (Adams et al.
2010), which is what makes pydensecrf's output what it is, so it is rebuilt here rather than
replaced by an exact Gaussian: features are elevated onto the plane ``sum = 0`` of ``Z^(d+1)``
scaled for a unit-variance blur, each point lands in the simplex whose 0-coloured vertex is the
nearest lattice point of the rounded, ranked coordinates, and its value is splatted to the d+1
vertices with barycentric weights, blurred with ``[1 2 1] / 2`` along each of the d+1 lattice
directions in turn (missing neighbours count as 0) and sliced back with the same weights times
``1 / (1 + 2^-d)``. The float32 arithmetic of the elevation, rounding and ranking follows the C++
order, so points land on the same vertices, and so do two traits of the x86-64 build (its SSE
code path): rounding half to even, and the vertices of the all-zero points that pad the last
block of 4. Only summation orders differ: on photographs Q is within ~1e-8 of pydensecrf's on
average (a few 1e-6 at most).

Instead of a hash table, vertex keys are packed into one int64 per vertex (a mixed-radix number
with a margin per coordinate, and the image index as the top digit when images share a lattice),
deduplicated with ``torch.unique`` and their blur neighbours found with ``torch.searchsorted``:
a step along a lattice direction adds a constant to the packed key. Values are ``C x N``
(labels x points) and the lattice ``C x (M + 1)``: splat is an ``index_add_`` per simplex corner,
blur and slice are column gathers, and a missing neighbour points at the extra, always-zero
column ``M``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from wsss.crf.params import CRFParams

UNARY_CLIP = 1e-5  # pydensecrf.utils.unary_from_softmax's default clip
_MAX_KEY = 2 ** 62  # packed vertex keys (and their neighbours' keys) stay below this


class PermutohedralLattice:
    """The permutohedral lattice of ``N`` points with ``d``-dimensional float32 features.

    Built once per feature set (one image, or many told apart by ``groups``, an int64 image index
    per point), then :meth:`filter` blurs any number of value rows with it. Everything is laid out
    point-last (``(d+1) x N``, ``C x N``) so each step is a few long vectorised operations.
    Vertex numbers are gathered as int32 (faster), which limits a lattice to 2^31 vertices.
    """

    def __init__(self, features: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        if features.ndim != 2 or features.dtype != torch.float32 or features.shape[0] == 0:
            raise ValueError(f"expected N x d float32 features with N > 0, got {features.dtype} "
                             f"{tuple(features.shape)}")
        self.points, self.dims = features.shape
        features, groups = _with_sse_padding(features, groups)
        rem0, rank, weights = _enclosing_simplex(features)
        keys, strides = _corner_keys(rem0, rank, groups)
        vertices, inverse = torch.unique(keys.flatten(), sorted=True, return_inverse=True)
        self.num_vertices = vertices.numel()
        corners = inverse.view(self.dims + 1, -1)[:, :self.points]
        self.corners = corners.contiguous()  # vertex of corner k of point n, int64 for index_add_
        self.corner_rows = corners.to(torch.int32)  # for the gathers, faster with int32
        self.weights = weights[:, :self.points].contiguous()  # barycentric, for splat and slice
        self.alpha = float(np.float32(1.0) / (np.float32(1.0) + np.float32(2.0) ** np.float32(-self.dims)))
        self.neighbours = _blur_neighbours(vertices, strides)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Approximate Gaussian filter (each point included) of ``C x N`` float32 ``values``."""
        channels = values.shape[0]
        lattice = values.new_zeros(channels, self.num_vertices + 1)  # the last column: no vertex
        for vertices, weights in zip(self.corners, self.weights):
            lattice.index_add_(1, vertices, values * weights)
        for lower, upper in self.neighbours:  # the d+1 lattice directions, in pydensecrf's order
            lattice = torch.add(lattice, lattice.index_select(1, lower) + lattice.index_select(1, upper),
                                alpha=0.5)
        out = lattice.index_select(1, self.corner_rows[0]) * self.weights[0]
        for rows, weights in zip(self.corner_rows[1:], self.weights[1:]):
            out.addcmul_(lattice.index_select(1, rows), weights)
        return out.mul_(self.alpha)  # pydensecrf's "magic" 1 / (1 + 2^-d)


def _with_sse_padding(features: torch.Tensor,
                      groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The points followed by pydensecrf's padding: its SSE lattice construction (the one built
    on x86-64) elevates points 4 at a time, fills a last partial block with all-zero features and
    enters the simplex corners of those padding points into the lattice too. They carry no value
    but, as vertices, pass values on in the blur. Each group (image) gets ``-N_g mod 4`` of them."""
    if groups is None:
        padding = -features.shape[0] % 4
    else:
        padding_groups = torch.repeat_interleave(-torch.bincount(groups) % 4)
        padding = padding_groups.numel()
        groups = torch.cat([groups, padding_groups])
    return torch.cat([features, features.new_zeros(padding, features.shape[1])]), groups


def _enclosing_simplex(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per point (all ``(d+1) x N``): the 0-coloured vertex ``rem0`` (int64), the rank of each
    elevated coordinate's remainder (int64, 0 = largest) and the barycentric weights of the d+1
    simplex corners (float32), computed in float32 in pydensecrf's order of operations."""
    points, dims = features.shape
    device = features.device
    inv_std_dev = float(np.float32(np.sqrt(2.0 / 3.0) * (dims + 1)))
    scale = torch.tensor([1.0 / np.sqrt(float((i + 2) * (i + 1))) * inv_std_dev for i in range(dims)],
                         dtype=torch.float32, device=device)
    scaled = (features * scale).T.contiguous()
    # elevate onto sum(x) = 0: x_j = (sum of the scaled features f_k, k >= j) - j f_(j-1), x_0 = sum
    elevated = features.new_empty(dims + 1, points)
    running = features.new_zeros(points)
    for j in range(dims, 0, -1):
        elevated[j] = running - j * scaled[j - 1]
        running = running + scaled[j - 1]
    elevated[0] = running
    down = torch.tensor(np.float32(1.0) / np.float32(dims + 1), device=device)
    nearest = torch.round(elevated * down)  # half to even, as SSE rounding does
    rem0 = nearest * (dims + 1)
    remainder = elevated - rem0
    # rank = position in decreasing order of the remainders, a tie going to the earlier coordinate
    order = torch.zeros(dims + 1, points, dtype=torch.int8, device=device)
    for i in range(dims):
        for j in range(i + 1, dims + 1):
            later_first = remainder[i] < remainder[j]
            order[i] += later_first
            order[j] += ~later_first
    rank = order.to(torch.int64) + nearest.sum(0).to(torch.int64)  # the sum: back onto the plane
    wrap = ((rank < 0).to(torch.int64) - (rank > dims).to(torch.int64)) * (dims + 1)
    rank += wrap
    rem0 += wrap
    # corner k's weight: difference of the remainders ranked d-k and d-k+1 (wrapping for k = 0)
    by_rank = torch.zeros_like(elevated).scatter_(0, rank, (elevated - rem0) * down).flip(0)
    weights = torch.empty_like(elevated)
    weights[1:] = by_rank[1:] - by_rank[:-1]
    weights[0] = by_rank[0] + (1.0 - by_rank[dims])
    return rem0.to(torch.int64), rank, weights


def _corner_keys(rem0: torch.Tensor, rank: torch.Tensor,
                 groups: torch.Tensor | None) -> tuple[torch.Tensor, list[int]]:
    """Packed int64 key of each point's d+1 simplex corners (``(d+1) x N``) and the strides of
    the first d lattice coordinates (the last one is implied by the zero sum).

    Corner k of a point is ``rem0 + k`` on coordinates ranked at most ``d - k`` and
    ``rem0 + k - (d+1)`` on the others. Each coordinate's digit has a margin of ``2d + 1`` on both
    sides, so a blur step (+d or -d on one coordinate, -1 or +1 on the others) never carries into
    the next digit; the image index, when given, is the top digit.
    """
    dims = rank.shape[0] - 1
    device = rank.device
    low = rem0[:dims].amin(1) - (2 * dims + 1)
    extent = rem0[:dims].amax(1) + (2 * dims + 1) - low + 1
    strides, stride = [], 1
    for size in reversed(extent.tolist()):
        strides.insert(0, stride)
        stride *= size
    top = 1 if groups is None else int(groups.max()) + 1
    if stride * top >= _MAX_KEY:
        raise ValueError(f"the permutohedral lattice spans {stride * top} keys, more than int64 packing "
                         "allows (features spread too far relative to the kernel width)")
    stride_of = torch.tensor(strides + [0], device=device)  # the implied coordinate has no digit
    base = ((rem0[:dims] - low.unsqueeze(1)) * stride_of[:dims].unsqueeze(1)).sum(0)
    if groups is not None:
        base += groups * stride
    # corner k moves by k on every digit, minus d+1 on the digits ranked above d - k
    by_rank = torch.zeros_like(rem0).scatter_(0, rank, stride_of.unsqueeze(1).expand_as(rem0))
    moved = torch.cat([torch.zeros_like(base).unsqueeze(0), by_rank.flip(0)[:-1].cumsum(0)])
    corner = torch.arange(dims + 1, device=device).unsqueeze(1) * sum(strides)
    return base + corner - (dims + 1) * moved, strides


def _blur_neighbours(vertices: torch.Tensor, strides: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per lattice direction j = 0..d: the column of each vertex's two neighbours, ``key - 1 +
    (d+1) e_j`` and ``key + 1 - (d+1) e_j`` (e_d moves only the implied coordinate), ``M + 1``
    long, where missing neighbours and the extra column itself point at the extra column ``M``.
    The second neighbour relation is the inverse of the first, so only the first is searched."""
    count = vertices.numel()
    columns = torch.arange(count, device=vertices.device)
    extra = torch.tensor([count], device=vertices.device)
    unset = torch.full((count + 2,), count, device=vertices.device)  # slot M + 1 takes the misses
    dims = len(strides)
    neighbours = []
    for j in range(dims + 1):
        step = (dims + 1) * strides[j] - sum(strides) if j < dims else -sum(strides)
        target = vertices + step
        found = torch.searchsorted(vertices, target).clamp_(max=count - 1)
        hit = vertices[found] == target
        lower = torch.cat([torch.where(hit, found, count), extra])
        upper = unset.clone().scatter_(0, torch.where(hit, found, count + 1), columns)[:count + 1]
        neighbours.append((lower.to(torch.int32), upper.to(torch.int32)))
    return neighbours


class _SymmetricKernel:
    """A Potts pairwise term: its lattice, the symmetric normalisation and the weight ``compat``."""

    def __init__(self, features: torch.Tensor, groups: torch.Tensor, compat: float) -> None:
        self.lattice = PermutohedralLattice(features, groups)
        ones = features.new_ones(1, features.shape[0])
        self.norm = (1.0 / torch.sqrt(self.lattice.filter(ones).double() + 1e-20)).float()
        self.compat = compat

    def message(self, q: torch.Tensor) -> torch.Tensor:
        """``compat * n * K(n * Q)``: what this term adds to each label's negative energy."""
        return self.compat * (self.norm * self.lattice.filter(self.norm * q))


def _pixel_features(image: np.ndarray, params: CRFParams) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian (``N x 2``) and bilateral (``N x 5``) float32 features of an ``H x W x 3``
    uint8 image, pixels in row-major order, each divided by its kernel width as pydensecrf does."""
    height, width = image.shape[:2]
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                         indexing="ij")
    xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
    colour = image.reshape(-1, 3).astype(np.float32)
    gaussian = xy / np.float32(params.gauss_sxy)
    bilateral = np.concatenate([xy / np.float32(params.bilateral_sxy),
                                colour / np.float32(params.bilateral_srgb)], axis=1)
    return gaussian, bilateral


def _check_pair(image: np.ndarray, prob: np.ndarray) -> None:
    """Refuse what pydensecrf would refuse or misread: a non-uint8 or non-RGB image, sizes that differ."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    if prob.ndim != 3 or prob.shape[0] == 0:
        raise ValueError(f"expected an R x H x W probability stack with R > 0, got {prob.shape}")
    if image.shape[:2] != prob.shape[1:]:
        raise ValueError(f"image {image.shape[:2]} and probabilities {prob.shape[1:]} differ in size")


def dense_crf_torch(image: np.ndarray, prob: np.ndarray, params: CRFParams,
                    device: torch.device | str = "cpu") -> np.ndarray:
    """Mean-field Q (``R x H x W`` float32) for ``prob`` on the CRF image ``image``, as
    :mod:`wsss.crf.pydensecrf_backend` computes it, on ``device``."""
    return dense_crf_torch_batch([image], [prob], params, device)[0]


def dense_crf_torch_batch(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], params: CRFParams,
                          device: torch.device | str = "cpu") -> list[np.ndarray]:
    """:func:`dense_crf_torch` for many images at once (sizes and label counts may differ).

    All pixels share one lattice per kernel, with the image index as the top digit of the vertex
    key, so images never mix and a GPU sees a few large operations instead of many small ones.
    Images with fewer labels get an infinite unary on the missing rows, hence Q = 0 there.
    """
    if len(images) != len(probs):
        raise ValueError(f"{len(images)} images but {len(probs)} probability stacks")
    if not images:
        return []
    probs = [np.asarray(prob) for prob in probs]
    for image, prob in zip(images, probs):
        _check_pair(image, prob)
    rows = max(prob.shape[0] for prob in probs)
    sizes = [prob.shape[1] * prob.shape[2] for prob in probs]
    features = [_pixel_features(image, params) for image in images]
    groups = torch.repeat_interleave(torch.arange(len(images)), torch.tensor(sizes)).to(device)
    kernels = [_SymmetricKernel(torch.from_numpy(np.concatenate([f[kind] for f in features])).to(device),
                                groups, compat)
               for kind, compat in enumerate((params.gauss_compat, params.bilateral_compat))]
    unary = torch.full((rows, sum(sizes)), float("inf"), device=device)
    start = 0
    for prob, size in zip(probs, sizes):
        unary[:prob.shape[0], start:start + size] = _unary(prob, device).reshape(prob.shape[0], size)
        start += size
    q = _mean_field(unary, kernels, params.iterations).cpu()
    out, start = [], 0
    for prob, size in zip(probs, sizes):
        out.append(q[:prob.shape[0], start:start + size].reshape(prob.shape).contiguous().numpy())
        start += size
    return out


def _unary(prob: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``-log(clip(prob, 1e-5, 1))`` as float32, as pydensecrf.utils.unary_from_softmax."""
    return torch.as_tensor(prob, device=device).clamp(UNARY_CLIP, 1.0).log().neg().float()


def _mean_field(unary: torch.Tensor, kernels: Sequence[_SymmetricKernel], iterations: int) -> torch.Tensor:
    """Q (``R x N``) after ``iterations`` parallel mean-field updates from ``softmax(-unary)``."""
    q = torch.softmax(-unary, dim=0)
    for _ in range(iterations):
        energy = -unary
        for kernel in kernels:
            energy = energy + kernel.message(q)
        q = torch.softmax(energy, dim=0)
    return q
