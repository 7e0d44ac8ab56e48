"""Decode: raw tar members -> RGB image in the working frame + the captions to use."""
from __future__ import annotations

from mining.config import RunConfig, SourceConfig, StageResources
from mining.records import Drop, Sample
from mining.sources.decode import decode_image, extract_captions
from mining.sources.shards import IMAGE_EXTS
from mining.stages.base import Stage


class DecodeStage(Stage):
    name = "decode"

    def __init__(self, source: SourceConfig, resources: StageResources) -> None:
        super().__init__(resources)
        self.source = source

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "DecodeStage":
        return cls(cfg.source, cfg.execution.decode)

    def process(self, samples: list[Sample]) -> None:
        src = self.source
        for sample in samples:
            members = sample.members
            image_ext = next((e for e in IMAGE_EXTS if e in members), None)
            if image_ext is None:
                sample.drop_with(Drop.MISSING_IMAGE, f"members: {sorted(members)}")
                continue
            captions, bad_utf8 = extract_captions(members, src.caption_json_fields, src.captions_per_image)
            if not captions:
                sample.drop_with(Drop.CAPTION_NOT_UTF8 if bad_utf8 else Drop.NO_CAPTION)
                continue
            raw = members[image_ext]
            if not raw:
                sample.drop_with(Drop.EMPTY_IMAGE)
                continue
            try:
                sample.image, sample.orig_size = decode_image(raw, src.max_image_pixels, src.working_size)
            except OverflowError as exn:
                sample.drop_with(Drop.IMAGE_TOO_LARGE, str(exn))
                continue
            except Exception as exn:  # PIL raises many types for corrupt data
                sample.drop_with(Drop.DECODE_ERROR, f"{type(exn).__name__}: {exn}")
                continue
            sample.frame_size = (sample.image.shape[1], sample.image.shape[0])
            sample.captions = captions
            sample.members = {}  # raw bytes are not needed downstream
