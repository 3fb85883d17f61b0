"""Image reading in every mode, CLIP preprocessing sizes, and errors for unreadable files."""
import numpy as np
import pytest
import torch
from PIL import Image

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.images import (CLIP_MEAN, CLIP_STD, load_rgb, model_input_size, prepare_image,
                                    read_image_size)

from conftest import write_image


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = write_image(tmp_path / f"x{suffix}", (37, 53), mode)
    rgb = load_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (37, 53, 3)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    arr = np.full((20, 30), 32768, dtype=np.uint16)
    arr[:, :10] = 0
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    rgb = np.asarray(load_rgb(path))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 20].tolist() == [128, 128, 128]


def test_resize_to_patch_multiples_and_normalise(tmp_path):
    path = tmp_path / "white.png"
    Image.new("RGB", (33, 17), (255, 255, 255)).save(path)
    prepared = prepare_image(path, 16)
    assert prepared.tensor.shape == (3, 32, 48) and prepared.orig_size == (17, 33)
    expected = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(prepared.tensor[:, 5, 5], expected, atol=1e-6)


def test_one_pixel_and_max_side():
    assert model_input_size(1, 1, 16) == (16, 16)
    assert model_input_size(4000, 3000, 16, max_side=1024) == (1024, 768)
    assert model_input_size(500, 375, 16, max_side=1024) == (512, 384)


@pytest.mark.parametrize("content, message", [(b"", "empty file"), (b"garbage", "unreadable image")])
def test_broken_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_rgb(path)
    assert str(path) in str(err.value)


def test_truncated_file(tmp_path):
    good = write_image(tmp_path / "full.jpg", (120, 160))
    cut = tmp_path / "cut.jpg"
    data = good.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    assert read_image_size(cut) == (120, 160)  # the header is intact ...
    with pytest.raises(UserError, match="cut.jpg: unreadable image"):
        load_rgb(cut)  # ... the pixels are not
    with pytest.raises(UserError, match="image not found"):
        load_rgb(tmp_path / "nope.jpg")


def test_float_tiff_in_unit_range_is_scaled_to_8_bits(tmp_path):
    arr = np.zeros((4, 6), np.float32)
    arr[:, 3:] = 1.0
    arr[0, 0] = 0.5
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    rgb = load_rgb(tmp_path / "f.tif")
    assert rgb[1, 0].tolist() == [0, 0, 0] and rgb[1, 4].tolist() == [255, 255, 255]
    assert rgb[0, 0].tolist() == [128, 128, 128]


def test_exif_rotation_is_not_applied_as_in_the_published_code(tmp_path):
    """The published stages open images with PIL and never apply the EXIF orientation, so the
    pixels are used as stored (a camera's portrait photo stays landscape); this project does the same."""
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(tmp_path / "rotated.jpg", exif=exif)
    with Image.open(tmp_path / "rotated.jpg") as img:
        assert img.getexif()[0x0112] == 6
    rgb = load_rgb(tmp_path / "rotated.jpg")
    assert rgb.shape == (40, 60, 3) and rgb[:, :25].min() > 200 and rgb[:, 35:].max() < 50
    assert prepare_image(tmp_path / "rotated.jpg", 16).orig_size == (40, 60)
