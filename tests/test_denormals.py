"""tagclip_cls.runtime.denormals: denormal floats flushed to zero inside the block only, and
stage 1's runner tagging under it on CPU (stage 3's tools: tests/test_seg_cpu_run.py)."""
import torch

import tagclip_cls.tagging.run as stage1
from tagclip_cls.runtime.denormals import denormals_flushed, flush_denormals


def denormals(n: int) -> torch.Tensor:
    """``n`` float32 1e-39 (below the smallest normal, 1.2e-38), made from their bits: converting
    1e-39 on a flushing thread would already give 0."""
    return torch.full((n,), 0x000AE398, dtype=torch.int32).view(torch.float32)


def test_flushing_is_on_inside_the_block_and_restored_after():
    assert not denormals_flushed()
    with flush_denormals():
        assert denormals_flushed()
        assert denormals(16).view(4, 4).matmul(torch.eye(4)).count_nonzero() == 0
        with flush_denormals():
            pass
        assert denormals_flushed()  # an inner block restores the outer block's mode
    assert not denormals_flushed()
    assert denormals(4).mul(1.5).count_nonzero() == 4


def test_disabled_block_changes_nothing():
    with flush_denormals(enabled=False):
        assert not denormals_flushed()


def test_stage1_tags_on_cpu_with_denormals_flushed(tmp_path, image_folder, tiny_checkpoint, monkeypatch):
    seen = []
    monkeypatch.setattr(stage1, "tag_images", lambda *args: seen.append(denormals_flushed()))
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\nhorse\n")
    stage1.run_stage1(stage1.TagRunOptions(img_root=str(image_folder), out=str(tmp_path / "out"),
                                           classes=str(classes), pretrained=tiny_checkpoint,
                                           cache_dir=str(tmp_path / "cache"), device="cpu"))
    assert seen == [True] and not denormals_flushed()
