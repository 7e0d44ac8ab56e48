"""Match: pairs from embeddings, then the sample is made light for the writer (masks become COCO RLE, the
image is encoded if the output keeps images, embeddings and pixels are released)."""
from __future__ import annotations

import io

from PIL import Image

from mining.config import MatchConfig, RunConfig, StageResources
from mining.matching import match
from mining.records import Drop, Pair, Sample
from mining.stages.base import Stage
from mining import masks


def _closest(sample: Sample, rejected: list[tuple[Pair, str]]) -> str | None:
    """Why an image kept no pair, said of its most similar assigned pair (what a curator checks a threshold by)."""
    if not rejected:
        return None
    pair, why = max(rejected, key=lambda r: r[0].similarity)
    return f"closest: {sample.entities[pair.entity_index].noun!r} on mask {pair.mask_index}, {why}"


class MatchStage(Stage):
    name = "match"
    reads = ("region_embeddings", "entity_embeddings", "entities", "rles")
    fills = ("pairs", "rles")   # and releases what only it needed: the image, dense masks, embeddings

    def __init__(self, match: MatchConfig, resources: StageResources, image_format: str | None = None) -> None:
        """`image_format`: 'jpg' or 'png' when the output stores images (output.write_images), else None."""
        super().__init__(resources)
        self.settings, self.image_format = match, image_format

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "MatchStage":
        return cls(cfg.match, cfg.execution.match, cfg.output.image_format if cfg.output.write_images else None)

    def process(self, samples: list[Sample]) -> None:
        for sample in samples:
            rejected: list[tuple[Pair, str]] = []
            sample.pairs = match(sample.region_embeddings, sample.entity_embeddings, self.settings,
                                 [e.count for e in sample.entities], sample.logit_scale,
                                 [e.captions() for e in sample.entities], rejected)
            if not sample.pairs:
                sample.drop_with(Drop.NO_CONFIDENT_PAIR, _closest(sample, rejected))
                continue
            if len(sample.rles) != len(sample.masks):   # the teacher stage encodes them; a sample built otherwise
                sample.rles = masks.encode_json(sample.masks)
            if self.image_format is not None:
                buf = io.BytesIO()
                fmt = "JPEG" if self.image_format == "jpg" else "PNG"
                Image.fromarray(sample.image).save(buf, format=fmt, quality=90)
                sample.image_bytes = buf.getvalue()
            sample.release_heavy()
