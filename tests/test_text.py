"""Text embeddings: the trimmed encoder equals open_clip's, templates, cache keys."""
import re

import pytest
import torch

from tagclip_cls.core.text import encode_prompts, encode_text_published, load_templates, text_embeddings
from tagclip_cls.runtime.errors import UserError


def test_published_encoder_equals_open_clip(tiny_clip):
    tokens = tiny_clip.tokenizer(["a photo of a cat.", "a photo of the hard to see coffee cup."])
    with torch.inference_mode():
        full = tiny_clip.model.encode_text(tokens)
        published = encode_text_published(tiny_clip, tokens)
    assert torch.allclose(full, published, atol=1e-5)


def test_templates_and_ensemble(tiny_clip):
    templates = load_templates()
    assert len(templates) == 85 and all(t.count("{}") == 1 for t in templates)
    assert templates[0] == "a bad photo of a {}." and templates[-1] == "this is one {} in the scene."
    emb = encode_prompts(tiny_clip, ["cat", "dog"], templates[:3])
    assert emb.shape == (2, 64) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-6)
    with torch.inference_mode():  # the ensemble by hand with open_clip's own encoder
        by_hand = []
        for name in ("cat", "dog"):
            feats = tiny_clip.model.encode_text(tiny_clip.tokenizer([t.format(name) for t in templates[:3]]))
            mean = (feats / feats.norm(dim=-1, keepdim=True)).mean(dim=0)
            by_hand.append(mean / mean.norm())
    assert torch.allclose(emb, torch.stack(by_hand), atol=1e-5)


def test_cache_is_keyed_by_classes_and_templates(tiny_clip, tmp_path):
    a = text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."], cache_dir=tmp_path)
    b = text_embeddings(tiny_clip, ["dog", "cat"], ["a {}."], cache_dir=tmp_path)
    text_embeddings(tiny_clip, ["cat", "dog"], ["the {}."], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 3
    assert torch.allclose(a[0], b[1]) and torch.equal(a, text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."],
                                                                         cache_dir=tmp_path))


def test_cache_invalidated_when_the_weights_change(tiny_state_dict, tmp_path):
    from tagclip_cls.core.models import load_clip
    import copy

    first = tmp_path / "a.pt"
    torch.save(tiny_state_dict, first)
    changed = copy.deepcopy(tiny_state_dict)
    changed["text_projection"] = changed["text_projection"].flip(0)  # another text tower
    second = tmp_path / "b.pt"
    torch.save(changed, second)
    cache = tmp_path / "cache"
    a = text_embeddings(load_clip(None, str(first)), ["cat"], ["a {}."], cache_dir=cache)
    b = text_embeddings(load_clip(None, str(second)), ["cat"], ["a {}."], cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 2 and not torch.allclose(a, b, atol=1e-4)
    changed["visual.proj"] = changed["visual.proj"] * 2  # the image tower alone: same text, same entry
    torch.save(changed, second)
    text_embeddings(load_clip(None, str(second)), ["cat"], ["a {}."], cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 2


def test_damaged_or_inconsistent_cache_entries_are_recomputed(tiny_clip, tmp_path, caplog):
    good = text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."], cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    for damage in (b"", b"garbage", "wide", "nan", "list"):
        if isinstance(damage, bytes):
            entry.write_bytes(damage)
        else:
            value = {"wide": torch.zeros(2, 65), "nan": torch.full((2, 64), float("nan")), "list": [1, 2]}[damage]
            torch.save(value, entry)
        again = text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."], cache_dir=tmp_path)
        assert torch.equal(again, good), damage
        assert torch.equal(torch.load(entry, weights_only=True), good)  # the entry is repaired


def test_unwritable_cache_only_warns(tiny_clip, tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with caplog.at_level("WARNING"):
        emb = text_embeddings(tiny_clip, ["cat"], ["a {}."], cache_dir=blocked / "cache")
    assert emb.shape == (1, 64) and "not written" in caplog.text


def test_cache_entry_linked_outside_the_cache_is_neither_read_nor_written(tiny_clip, tmp_path):
    cache = tmp_path / "cache"
    good = text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."], cache_dir=cache)
    (entry,) = cache.glob("*.pt")
    outside = tmp_path / "outside.pt"
    torch.save(torch.ones_like(good) / 8, outside)  # would pass as a cache entry if it were read
    before = outside.read_bytes()
    entry.unlink()
    entry.symlink_to(outside)
    with pytest.raises(UserError, match=rf"^{re.escape(str(entry))}: would be written outside {re.escape(str(cache))} "):
        text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."], cache_dir=cache)
    assert outside.read_bytes() == before and entry.is_symlink()
    entry.unlink()
    entry.symlink_to(tmp_path / "missing.pt")  # a dangling link out: nothing created at its target
    with pytest.raises(UserError, match="would be written outside"):
        text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."], cache_dir=cache)
    assert not (tmp_path / "missing.pt").exists()
