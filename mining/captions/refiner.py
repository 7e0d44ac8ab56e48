"""A vision-language model that completes web captions (Uni-OVSeg): alt-text names only part of what an image
shows, so the model is asked to describe it, and its answer becomes one more caption to parse for entities.

Any transformers image-text-to-text model that has a processor with a chat template (LLaVA, Qwen2-VL, SmolVLM,
...): the prompt and the image go through that template, a batch is left-padded so that every answer continues
from its prompt's last token, decoding is greedy (a rerun writes the same caption), and only the new tokens
are decoded."""
from __future__ import annotations

import inspect

import numpy as np

from mining.config import RefineConfig
from mining.logs import warn_limited

MIN_ROOM = 8   # new tokens below which a prompt is not sent (captions.refine.max_new_tokens' own lower bound)


class CaptionRefiner:
    """`device`: 'auto', 'cpu' or 'cuda'; `precision` as `execution.refine` names it. bf16/fp16 load the weights
    in that dtype (a VLM's billions of parameters are what fill a GPU), fp32/tf32 in fp32."""

    def __init__(self, cfg: RefineConfig, device: str = "auto", precision: str = "fp32") -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from mining.devices import AUTOCAST_DTYPES, resolve_device, resolve_precision

        self.cfg = cfg
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = AUTOCAST_DTYPES.get(self.precision, torch.float32)
        self.processor = AutoProcessor.from_pretrained(cfg.model)
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"   # generation continues each row from its last position
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_token_id = tokenizer.pad_token_id
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=self.dtype).to(self.device).eval()
        self.context = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        # an encoder-decoder's generate returns only the answer; a decoder-only's, the prompt and then the answer
        self.answer_only = bool(getattr(self.model.config, "is_encoder_decoder", False))
        padding = {"padding": True, "padding_side": "left"}   # explicit: a processor's defaults may say otherwise
        # transformers 5 takes the processor's arguments in `processor_kwargs` (4.x: loose)
        takes = "processor_kwargs" in inspect.signature(self.processor.apply_chat_template).parameters
        self.padding = {"processor_kwargs": padding} if takes else padding

    def conversation(self, image: np.ndarray) -> list[dict]:
        from PIL import Image

        return [{"role": "user", "content": [{"type": "image", "image": Image.fromarray(image)},
                                             {"type": "text", "text": self.cfg.prompt}]}]

    def refine(self, images: list[np.ndarray]) -> list[str]:
        """One caption per uint8[H, W, 3] image, whitespace collapsed ('' when the model answers nothing, or when
        the prompt leaves no room in the model's context)."""
        import torch

        from mining.devices import forward_precision

        inputs = self.processor.apply_chat_template(
            [self.conversation(image) for image in images], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", **self.padding)
        inputs = inputs.to(self.device, dtype=self.dtype)
        width = inputs["input_ids"].shape[1]
        room = self.cfg.max_new_tokens
        if self.context is not None and not self.answer_only:   # a decoder's answer shares positions with its prompt
            room = min(room, self.context - width)
        if room < MIN_ROOM:   # generate would index past the model's position table
            warn_limited("refine-context", f"captions.refine: a prompt of {width} tokens leaves no room in the "
                                           f"model's context of {self.context}: {len(images)} image(s) not refined")
            return [""] * len(images)
        with torch.inference_mode(), forward_precision(self.device, self.precision):
            tokens = self.model.generate(**inputs, max_new_tokens=room, do_sample=False,
                                         pad_token_id=self.pad_token_id)
        answers = self.processor.batch_decode(tokens if self.answer_only else tokens[:, width:],
                                              skip_special_tokens=True)
        return [" ".join(answer.split()) for answer in answers]
