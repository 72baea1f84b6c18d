"""Missing CLIP weights offline: a clear error that says where it looked and how to provide them."""

import pytest

from dpmpp.model.backbone import PretrainedWeightsMissing, resolve_pretrained


def test_missing_openai_weights_explain_where_and_how(tmp_path):
    # An empty cache folder stands for a machine without the weights, whatever this machine has cached.
    with pytest.raises(PretrainedWeightsMissing) as error:
        resolve_pretrained("ViT-B-16-quickgelu", "openai", cache_dir=tmp_path)
    message = str(error.value)
    assert "--pretrained" in message and "vit_base_patch16_clip_224.openai" in message
    assert "ViT-B-16.pt" in message  # the legacy OpenAI file name it also looked for


def test_a_weights_file_is_used_as_is_and_none_means_random(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    assert resolve_pretrained("ViT-B-16-quickgelu", str(weights)) == str(weights)
    assert resolve_pretrained("dpmpp-tiny", None) is None
