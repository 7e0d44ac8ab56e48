"""Model B: an open-vocabulary Mask2Former and the folder it lives in.

The network is transformers' `Mask2FormerForUniversalSegmentation` (the teacher's architecture, started from the
teacher's weights) whose class head is replaced: each query's decoder state is projected into CLIP's text space
and classified by cosine with the frozen text embeddings of the class names, plus a learned "no object"
embedding, at a fixed logit scale. Any vocabulary can be named at inference: only the text embeddings change.

The folder (`save_segmenter` / `load_segmenter`):
    mask2former/          save_pretrained of the Mask2Former (its own, unused class head included) + processor
    head.safetensors      the text-space head: proj.weight, proj.bias, no_object
    segmenter.json        format, logit scale, embedding size, training vocabulary, and the CLIP whose text
                          tower embeds class names (a `regions` config: model, pretrained, templates)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "ovmine-segmenter"
VERSION = 1
META_FILE = "segmenter.json"
HEAD_FILE = "head.safetensors"
M2F_DIR = "mask2former"


class TextSpaceHead(nn.Module):
    """float[B, Q, hidden] decoder states -> float[B, Q, V + 1] logits: cosine with V text embeddings and the
    learned no-object embedding (last column), times `logit_scale`."""

    def __init__(self, hidden_dim: int, embed_dim: int, logit_scale: float) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_dim, embed_dim)
        self.no_object = nn.Parameter(torch.randn(embed_dim) / embed_dim ** 0.5)
        self.logit_scale = logit_scale

    def embed(self, states: torch.Tensor) -> torch.Tensor:
        """float[B, Q, D]: each query's L2-normalised embedding in CLIP's text space."""
        return F.normalize(self.proj(states).float(), dim=-1)

    def forward(self, states: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        queries = self.embed(states)
        classes = torch.cat([F.normalize(text.float(), dim=-1), F.normalize(self.no_object.float(), dim=0)[None]])
        return self.logit_scale * queries @ classes.T


class OpenVocabSegmenter(nn.Module):
    def __init__(self, mask2former: nn.Module, embed_dim: int, logit_scale: float) -> None:
        super().__init__()
        self.mask2former = mask2former
        # the teacher's class head is kept (the folder stays a plain transformers one) but never used or trained
        for p in mask2former.class_predictor.parameters():
            p.requires_grad_(False)
        self.head = TextSpaceHead(mask2former.config.hidden_dim, embed_dim, logit_scale)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None, text: torch.Tensor,
                queries: bool = False) -> tuple:
        """Per decoder layer (last one last): class logits float[B, Q, V + 1] and mask logits float[B, Q, h, w]
        at 1/4 of the padded input; with `queries`, also the last layer's query embeddings float[B, Q, D] (what
        the grounding loss aligns with caption nouns)."""
        out = self.mask2former.model(pixel_values=pixel_values, pixel_mask=pixel_mask, output_hidden_states=True,
                                     return_dict=True)
        states = out.transformer_decoder_intermediate_states
        classes = [self.head(s.transpose(0, 1), text) for s in states]
        if queries:
            return classes, list(out.masks_queries_logits), self.head.embed(states[-1].transpose(0, 1))
        return classes, list(out.masks_queries_logits)


def freeze_unused_parameters(model: OpenVocabSegmenter) -> list[str]:
    """Freeze the parameters no output depends on (e.g. the Swin backbone's final layer norm, which Mask2Former
    never reads), found by one probe pass on a small blank image: DDP without `find_unused_parameters` (the
    fast path) fails on a trainable parameter that gets no gradient. Returns their names."""
    was_training = model.training
    model.train()
    text = torch.zeros(1, model.head.proj.out_features)
    text[0, 0] = 1.0
    param = next(model.parameters())
    classes, masks = model(torch.zeros(1, 3, 64, 64, device=param.device), None, text.to(param.device))
    (sum(c.sum() for c in classes) + sum(m.sum() for m in masks)).backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in model.named_parameters():
        p.grad = None
        if name in unused:
            p.requires_grad_(False)
    model.train(was_training)
    return unused


def make_criterion(mask2former: nn.Module, vocabulary_size: int, no_object_weight: float,
                   class_weight: float, mask_weight: float, dice_weight: float,
                   num_points: int | None = None) -> nn.Module:
    """transformers' own Mask2Former loss (Hungarian matcher, mask BCE + Dice on sampled points, cross-entropy
    with a down-weighted no-object class), sized for this vocabulary."""
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

    config = mask2former.config.__class__.from_dict(mask2former.config.to_dict())
    config.num_labels = vocabulary_size
    config.no_object_weight = float(no_object_weight)
    config.class_weight, config.mask_weight, config.dice_weight = map(float, (class_weight, mask_weight, dice_weight))
    if num_points is not None:
        config.train_num_points = int(num_points)
    weights = {"loss_cross_entropy": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
    criterion = Mask2FormerLoss(config=config, weight_dict=weights)
    criterion.get_num_masks = masks_per_worker   # transformers averages over workers only under accelerate
    return criterion


def masks_per_worker(class_labels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The loss's normaliser: the target masks of the whole global batch divided by the workers (DETR's
    num_boxes), so that every worker's mask loss is on one scale however the masks fell between them."""
    count = torch.as_tensor(float(sum(len(c) for c in class_labels)), device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / torch.distributed.get_world_size()
    return torch.clamp(count, min=1)


def segmentation_loss(criterion: nn.Module, classes: list[torch.Tensor], masks: list[torch.Tensor],
                      mask_labels: list[torch.Tensor], class_labels: list[torch.Tensor]) -> torch.Tensor:
    """The weighted sum of the criterion's losses over the last layer and (auxiliary) every earlier one, as
    `Mask2FormerForUniversalSegmentation.get_loss_dict` weighs them."""
    aux = [{"masks_queries_logits": m.float(), "class_queries_logits": c.float()}
           for c, m in zip(classes[:-1], masks[:-1])]
    losses = criterion(masks_queries_logits=masks[-1].float(), class_queries_logits=classes[-1].float(),
                       mask_labels=mask_labels, class_labels=class_labels, auxiliary_predictions=aux or None)
    return sum(weight * loss for name, loss in losses.items()
               for key, weight in criterion.weight_dict.items() if key in name)


def load_mask2former(source: str):
    """(model, processor) of a transformers Mask2Former folder or hub id; a bad folder names itself."""
    from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

    try:
        model = Mask2FormerForUniversalSegmentation.from_pretrained(source)
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, SafetensorError, json.JSONDecodeError) as err:
        raise ValueError(f"{source}: not a loadable transformers Mask2Former folder ({str(err).splitlines()[0]})") \
            from None
    if model.config.model_type != "mask2former":
        raise ValueError(f"{source} is a {model.config.model_type!r} model; the segmenter needs a Mask2Former")
    return model, processor


def build_segmenter(teacher: str, embed_dim: int, logit_scale: float, seed: int = 0):
    """(OpenVocabSegmenter started from the teacher's weights with a fresh head, processor)."""
    mask2former, processor = load_mask2former(teacher)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)   # the same fresh head on every worker
        model = OpenVocabSegmenter(mask2former, embed_dim, logit_scale)
    return model, processor


@dataclass
class LoadedSegmenter:
    model: OpenVocabSegmenter
    processor: Any
    meta: dict[str, Any]

    @property
    def clip(self) -> dict[str, Any]:
        return self.meta["clip"]


def save_segmenter(model: OpenVocabSegmenter, processor: Any, out: str | Path, clip: dict[str, Any],
                   vocabulary: list[str], extra: dict[str, Any] | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.mask2former.save_pretrained(out / M2F_DIR, safe_serialization=True)
    processor.save_pretrained(out / M2F_DIR)
    save_file({k: v.detach().cpu().float().contiguous() for k, v in model.head.state_dict().items()},
              str(out / HEAD_FILE), metadata={"ovmine": "open-vocabulary segmenter head"})
    meta = {"format": FORMAT, "version": VERSION, "logit_scale": model.head.logit_scale,
            "embed_dim": model.head.proj.out_features, "clip": clip, "vocabulary": vocabulary,
            "training": extra or {}}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_segmenter(folder: str | Path, device: torch.device | str = "cpu") -> LoadedSegmenter:
    """The segmenter `save_segmenter` wrote; every way the folder can be wrong is a one-line error naming it."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: not an ovmine segmenter folder (no {META_FILE}; train one with "
                                f"`ovmine train segmenter`)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}): the segmenter folder is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{meta_path}: not an {FORMAT} description (format {found!r})")
    missing = [k for k in ("logit_scale", "embed_dim", "clip") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing {', '.join(missing)}")
    mask2former, processor = load_mask2former(str(folder / M2F_DIR))
    model = OpenVocabSegmenter(mask2former, int(meta["embed_dim"]), float(meta["logit_scale"]))
    head_path = folder / HEAD_FILE
    try:
        state = load_file(str(head_path))
        model.head.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError) as err:
        raise ValueError(f"{head_path}: cannot load the segmenter head ({str(err).splitlines()[0]})") from None
    return LoadedSegmenter(model.to(device).eval(), processor, meta)
