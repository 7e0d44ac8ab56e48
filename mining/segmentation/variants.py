"""The variants one `ovmine eval-seg` scores, from what it is given (aim 3 of the trainer issue):

    --teacher-config FILE --clip NAME=SPEC   teacher+NAME      teacher masks, the CLIP's masked-crop classes
    --model DIR                              segmenter         Model B alone
    --model DIR --clip NAME=SPEC             segmenter+NAME    Model B ensembled with the CLIP (λ)

With `--clip shipped=... --clip adapted=...`, a teacher config and a model, one command scores (i) teacher +
shipped CLIP, (ii) teacher + adapted CLIP, (iii) the segmenter and (iv) the segmenter + adapted CLIP."""
from __future__ import annotations

import re
from typing import Any

import torch

from mining.config import RegionsConfig, load_config
from mining.segmentation.clip_scores import CropClassifier
from mining.segmentation.predict import SegmenterPredictor, TeacherClipPredictor
from mining.storage import S3Options

_NAMED = re.compile(r"^([A-Za-z][\w.-]*)=(.+)$")


def parse_clip_specs(specs: list[str]) -> dict[str, str]:
    """['shipped=local-dir:/a', 'local-dir:/b'] -> {'shipped': 'local-dir:/a', 'clip2': 'local-dir:/b'}."""
    named: dict[str, str] = {}
    for i, spec in enumerate(specs, 1):
        found = _NAMED.match(spec)
        name, value = (found.group(1), found.group(2)) if found else ("clip" if len(specs) == 1 else f"clip{i}", spec)
        if name in named:
            raise ValueError(f"--clip names {name!r} twice: give each CLIP its own NAME=SPEC")
        named[name] = value
    return named


def build_variants(model: str | None = None, teacher_config: str | None = None, clips: list[str] | None = None,
                   lam: float = 0.7, device: str = "cpu", crop_context: float | None = None,
                   crop_fit: str | None = None, s3: S3Options | None = None) -> dict[str, Any]:
    """name -> predictor(image, names) for every variant the arguments allow (see the module docstring)."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    run_cfg = load_config(teacher_config) if teacher_config else None
    if run_cfg is not None and run_cfg.teacher.kind != "mask2former":
        raise ValueError(f"{teacher_config}: teacher.kind is {run_cfg.teacher.kind!r}; the teacher variants read "
                         f"Mask2Former queries (teacher.kind: mask2former)")
    regions = run_cfg.regions if run_cfg is not None else RegionsConfig()
    crops = {name: CropClassifier.from_spec(spec, dev, crop_context, crop_fit, regions, s3)
             for name, spec in parse_clip_specs(clips or []).items()}
    variants: dict[str, Any] = {}
    if run_cfg is not None:
        if not crops:
            raise ValueError("--teacher-config needs --clip SPEC: the CLIP that classifies the teacher's masks")
        for name, clip in crops.items():
            variants[f"teacher+{name}"] = TeacherClipPredictor(run_cfg.teacher.mask2former, clip, dev)
    if model is not None:
        segmenter = variants["segmenter"] = SegmenterPredictor(model, dev, s3=s3)
        for name, clip in crops.items():
            variants[f"segmenter+{name}"] = segmenter.ensembled(clip, lam)
    return variants
