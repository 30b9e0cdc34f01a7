import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.model_config import ModelConfig, count_parameters


def test_hand_count_llama_style():
    # 2 layers, h=64, ffn=256, 2 heads, RMSNorm, SwiGLU, tied, V=256
    cfg = ModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=256, num_attention_heads=2, seq_length=128)
    per_layer = 2 * 64 + 4 * 64 * 64 + 3 * 64 * 256  # two norms, q k v o, gate up down
    c = count_parameters(cfg, 256)
    assert c.non_embedding == 2 * per_layer + 64
    assert c.total == c.non_embedding + 256 * 64
    assert c.flops_per_token == 6 * (c.non_embedding + 256 * 64) + 6 * 2 * 128 * 64


def test_hand_count_gpt_style_with_gqa_biases_learned_positions_untied():
    cfg = ModelConfig(num_layers=3, hidden_size=96, ffn_hidden_size=384, num_attention_heads=4, num_query_groups=2,
                      seq_length=64, normalization="LayerNorm", gated_linear_unit=False, add_bias_linear=True,
                      share_embeddings_and_output_weights=False, position_embedding_type="learned_absolute")
    kv = 24
    qkv = 96 * (4 * kv + 2 * 2 * kv) + (4 * kv + 2 * 2 * kv)
    per_layer = 2 * 2 * 96 + qkv + (4 * kv * 96 + 96) + (96 * 384 + 384) + (384 * 96 + 96)
    c = count_parameters(cfg, 1000)
    assert c.non_embedding == 3 * per_layer + 2 * 96
    assert c.total == c.non_embedding + 1000 * 96 + 64 * 96 + 1000 * 96


@pytest.mark.parametrize("cfg", [
    ModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=256, num_attention_heads=2),
    ModelConfig(num_layers=3, hidden_size=96, ffn_hidden_size=200, num_attention_heads=6, num_query_groups=2, kv_channels=20),
    ModelConfig(num_layers=1, hidden_size=32, ffn_hidden_size=64, num_attention_heads=1, share_embeddings_and_output_weights=False),
])
def test_count_equals_the_built_transformers_model(cfg):
    from mlsl_lightning.model import build_decoder

    model = build_decoder(cfg, 300)
    built = sum(p.numel() for p in model.parameters())
    assert count_parameters(cfg, 300).total == built


def test_bad_architecture_is_rejected():
    with pytest.raises(ConfigError, match="not divisible by num_attention_heads"):
        ModelConfig.from_mapping({"num_layers": 2, "hidden_size": 65, "ffn_hidden_size": 8, "num_attention_heads": 2})
    with pytest.raises(ConfigError, match="unknown field"):
        ModelConfig.from_mapping({"num_layers": 2, "hidden": 64, "ffn_hidden_size": 8, "num_attention_heads": 2})
