"""How a CLIP stage computes on its device, every choice made once.

Both stages, their APIs and their tools leave the device-dependent choices unset (``None``) and
let :func:`resolve_runtime` fill them in, so that ``Tagger.from_pretrained(device="cuda")`` and
``gen_tags.py --device cuda`` run alike. :class:`ClipChoices` holds the options both CLIP stages
take, with their one set of defaults; each stage adds its own (``TagChoices``, ``MaskChoices``).
"""
from __future__ import annotations

from dataclasses import dataclass

from tagclip_cls.core.batches import default_batching
from tagclip_cls.core.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from tagclip_cls.runtime.overlap import read_threads
from tagclip_cls.runtime.precision import check_precision, resolve_attention


@dataclass(frozen=True)
class Runtime:
    """The resolved runtime of a CLIP stage (see :func:`resolve_runtime`)."""

    device: str = "cpu"  # torch device string: cpu, cuda, cuda:N
    precision: str = "fp32"  # runtime.precision.PRECISIONS, checked for the device
    attention: str = "exact"  # runtime.precision.ATTENTION_MODES
    batching: str = "grid"  # core.batches.BATCHINGS
    loader_threads: int = 0  # image readers beside the model (0: inline)


def resolve_runtime(device: str = "cpu", precision: str = "fp32", attention: str | None = None,
                    batching: str | None = None, loader_threads: int | None = None) -> Runtime:
    """Check ``precision`` for ``device`` and replace every ``None`` by the device's default:
    on a GPU fused attention, mixed batches and half the cores reading images; on a CPU exact
    attention (the published bits), grid batches and reading inline."""
    device = str(device)
    device_type = device.split(":")[0]
    check_precision(precision, device_type)
    return Runtime(device=device, precision=precision, attention=resolve_attention(attention, device),
                   batching=batching or default_batching(device),
                   loader_threads=read_threads(loader_threads, device_type))


@dataclass
class ClipChoices:
    """The options both CLIP stages take, as a caller gives them (``None``: the device's default)."""

    device: str = "cpu"
    precision: str = "fp32"
    attention: str | None = None  # None: fused on a GPU, exact on a CPU
    batching: str | None = None  # None: mixed on a GPU, grid on a CPU
    loader_threads: int | None = None  # None: half the cores on a GPU, 0 on a CPU
    max_side: int | None = DEFAULT_MAX_SIDE  # longer image sides are scaled down to this
    max_pixels: int = DEFAULT_MAX_PIXELS  # image files of more pixels are refused from their header
    no_fp16_pos: bool = False  # keep the positional table in float32 (the published code rounds it)

    def runtime(self) -> Runtime:
        """:func:`resolve_runtime` of these choices."""
        return resolve_runtime(self.device, self.precision, self.attention, self.batching, self.loader_threads)
