"""Real-size architectures with random weights, written as local model folders: what configs/coco.yaml names,
without downloading anything (random weights time and place on a device the same as trained ones)."""
from __future__ import annotations

from pathlib import Path


def mask2former_swin_large_config():
    """Mask2Former with a Swin-L backbone, COCO panoptic's shape (200 queries, 133 classes)."""
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(image_size=384, patch_size=4, embed_dim=192, depths=[2, 2, 18, 2],
                          num_heads=[6, 12, 24, 48], window_size=12,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(backbone_config=backbone, num_queries=200, num_labels=133, use_timm_backbone=False,
                             use_pretrained_backbone=False)


def random_mask2former_swin_large(out: str | Path) -> str:
    """`mask2former_swin_large_config` with random weights and COCO's processor, saved as a model folder."""
    import torch
    from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(mask2former_swin_large_config()).save_pretrained(out)
    Mask2FormerImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333}, num_labels=133).save_pretrained(out)
    return str(out)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
          "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
          "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def qwen2_5_0_5b_config():
    """Qwen2.5-0.5B-Instruct's shape: 24 layers of width 896, grouped-query attention (14 heads, 2 KV)."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                       tie_word_embeddings=True, eos_token_id=2, pad_token_id=0, bos_token_id=None)


def chat_tokenizer(vocab_size: int, extra_special: list[str] = ()):
    """A word-level tokenizer with ChatML and exactly `vocab_size` ids (real tokenizers cannot be downloaded): a
    few hundred words of captions and answers, and filler words for the rest, so that whatever id a random model
    emits decodes to a word and an answer is as long as the model made it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mining.entities.llm_parser import SYSTEM_PROMPT

    specials = ["<|pad|>", "<unk>", "<|im_start|>", "<|im_end|>", *extra_special]
    text = SYSTEM_PROMPT + " a dog on the sofa next to red ball two cats user assistant system describe image"
    words = sorted({word for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)})
    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials])}
    vocab |= {f"w{i}": i for i in range(len(vocab), vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|pad|>", unk_token="<unk>",
                                        eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>",
                                                                                           *extra_special])
    tokenizer.chat_template = CHATML
    return tokenizer


def random_qwen2_5_0_5b(out: str | Path) -> str:
    """The 0.5B instruct LM's architecture with random weights (bf16, as the checkpoint ships) and a chat tokenizer."""
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    config = qwen2_5_0_5b_config()
    tokenizer = chat_tokenizer(config.vocab_size)
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def random_llava_clip_l_qwen(out: str | Path) -> str:
    """A LLaVA-1.5-style vision-language model: CLIP ViT-L/14 at 336 px (576 image tokens), an MLP projector and
    the Qwen2.5-0.5B language model (LLaVA-OneVision-0.5B's sizes without its any-resolution tiling), random, bf16."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)

    torch.manual_seed(0)
    text = qwen2_5_0_5b_config()
    tokenizer = chat_tokenizer(text.vocab_size, ["<image>"])
    text.eos_token_id, text.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(
        "<image>"), vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=576)
    LlavaForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(out)
    images = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=CHATML).save_pretrained(out)
    return str(out)
