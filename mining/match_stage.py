"""The match stage: pairs from embeddings, then the record is made light for the trip to the writer
(masks become COCO RLE, embeddings and pixels are released)."""
from __future__ import annotations

import io

from PIL import Image

from mining.matching import match
from mining.records import Drop, Sample
from mining.stage import Stage
from mining.teachers.base import rle_json


class MatchStage(Stage):
    name = "match"

    def process(self, samples: list[Sample]) -> None:
        for sample in samples:
            sample.pairs = match(sample.region_embeddings, sample.entity_embeddings, self.cfg.match,
                                 [e.count for e in sample.entities], sample.logit_scale,
                                 [e.captions() for e in sample.entities])
            if not sample.pairs:
                sample.drop_with(Drop.NO_CONFIDENT_PAIR)
                continue
            sample.rles = rle_json(sample.masks)
            if self.cfg.output.write_images:
                buf = io.BytesIO()
                fmt = "JPEG" if self.cfg.output.image_format == "jpg" else "PNG"
                Image.fromarray(sample.image).save(buf, format=fmt, quality=90)
                sample.image_bytes = buf.getvalue()
            sample.release_heavy()
