import pytest
import torch

from training.classifier import PromptClassifier
from training.learners import LearnerConfig
from training.text_passes import encode_prompts
from training.text_tower import ClassTokens, PromptError, TextTower

NAMES = ["cat", "golden retriever", "a very long class name with many words", "x"]


def _reference(backbone, texts):
    with torch.no_grad():
        return torch.nn.functional.normalize(backbone.model.encode_text(backbone.tokenizer(texts)), dim=-1)


def test_embeddings_path_matches_encode_text(tiny_backbone):
    tower = TextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    tokens = tower.class_tokens(NAMES, 0, "a photo of a {}.")
    with torch.no_grad():
        ours = encode_prompts(tower, torch.zeros(1, 0, tower.width), tokens)[0]
    torch.testing.assert_close(
        ours, _reference(tiny_backbone, [f"a photo of a {n}." for n in NAMES]), atol=1e-5, rtol=0
    )


def test_truncated_sequences_equal_full_length(tiny_backbone):
    tower = TextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    short = tower.class_tokens(NAMES[:2], 4)
    full_len = tower.context_length - 1 - 4
    padded = ClassTokens(
        short.names,
        4,
        short.prefix,
        torch.nn.functional.pad(short.suffix, (0, 0, 0, full_len - short.suffix.shape[1])),
        short.eot,
    )
    assert short.suffix.shape[1] < full_len  # the cut really happened
    ctx = torch.randn(3, 4, tower.width) * 0.02
    with torch.no_grad():
        torch.testing.assert_close(
            encode_prompts(tower, ctx, short), encode_prompts(tower, ctx, padded), atol=1e-5, rtol=0
        )


def test_coop_initialised_from_words_equals_hand_written_prompt(tiny_backbone):
    coop = PromptClassifier.create(tiny_backbone, LearnerConfig("coop", ctx_init="a photo of a"), NAMES)
    zs = PromptClassifier.create(tiny_backbone, LearnerConfig("zeroshot"), NAMES)
    f = torch.nn.functional.normalize(torch.randn(2, tiny_backbone.identity.embed_dim), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(coop(f).logits, zs(f).logits, atol=1e-4, rtol=0)


def test_chunking_does_not_change_features(tiny_backbone):
    tower = TextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    tokens = tower.class_tokens(NAMES, 4)
    ctx = torch.randn(5, 4, tower.width) * 0.02
    with torch.no_grad():
        torch.testing.assert_close(
            encode_prompts(tower, ctx, tokens, chunk=7),
            encode_prompts(tower, ctx, tokens, chunk=1000),
            atol=1e-6,
            rtol=0,
        )


def test_select_and_cat_round_trip(tiny_backbone):
    tower = TextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    tokens = tower.class_tokens(NAMES, 4)
    joined = ClassTokens.cat([tokens.select([0, 1]), tokens.select([2, 3])])
    assert joined.names == NAMES
    ctx = torch.randn(2, 4, tower.width) * 0.02
    with torch.no_grad():
        torch.testing.assert_close(
            encode_prompts(tower, ctx, joined), encode_prompts(tower, ctx, tokens), atol=1e-6, rtol=0
        )


def test_too_long_prompt_is_refused(tiny_backbone):
    tower = TextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    with pytest.raises(PromptError, match="too long"):
        tower.class_tokens(["word " * 40], 4)
