"""Text embeddings: the trimmed encoder equals open_clip's, templates, cache keys."""
import torch

from tagclip_cls.core.text import encode_prompts, encode_text_published, encode_text_trimmed, load_templates, text_embeddings


def test_trimmed_encoding_equals_full_length(tiny_clip):
    tokens = tiny_clip.tokenizer(["a photo of a cat.", "a photo of the hard to see coffee cup."])
    with torch.inference_mode():
        full = tiny_clip.model.encode_text(tokens)
        trimmed = encode_text_trimmed(tiny_clip.model, tokens)
        published = encode_text_published(tiny_clip, tokens)
    assert torch.allclose(full, trimmed, atol=1e-5) and torch.allclose(full, published, atol=1e-5)


def test_templates_and_ensemble(tiny_clip, tmp_path):
    templates = load_templates()
    assert len(templates) == 85 and all(t.count("{}") == 1 for t in templates)
    assert templates[0] == "a bad photo of a {}." and templates[-1] == "this is one {} in the scene."
    emb = encode_prompts(tiny_clip, ["cat", "dog"], templates[:3])
    assert emb.shape == (2, 64) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-6)
    exact = encode_prompts(tiny_clip, ["cat", "dog"], templates[:3], exact=True)
    assert torch.allclose(emb, exact, atol=1e-5)


def test_cache_is_keyed_by_classes_and_templates(tiny_clip, tmp_path):
    a = text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."], cache_dir=tmp_path)
    b = text_embeddings(tiny_clip, ["dog", "cat"], ["a {}."], cache_dir=tmp_path)
    text_embeddings(tiny_clip, ["cat", "dog"], ["the {}."], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 3
    assert torch.allclose(a[0], b[1]) and torch.equal(a, text_embeddings(tiny_clip, ["cat", "dog"], ["a {}."],
                                                                         cache_dir=tmp_path))
