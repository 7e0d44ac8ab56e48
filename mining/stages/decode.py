"""Decode: raw tar members -> RGB image in the working frame + the captions to use. With
`execution.decode.num_gpus` > 0 a batch's JPEGs are decoded and resized on the GPU (nvJPEG), the host reading
only their headers."""
from __future__ import annotations

from mining.config import RunConfig, SourceConfig, StageResources
from mining.records import Drop, Sample
from mining.sources.decode import decode_images_on_device, decode_or_error, extract_captions
from mining.sources.shards import IMAGE_EXTS
from mining.stages.base import Stage


class DecodeStage(Stage):
    name = "decode"
    reads = ("members",)
    fills = ("image", "orig_size", "frame_size", "captions")

    def __init__(self, source: SourceConfig, resources: StageResources) -> None:
        super().__init__(resources)
        self.source = source
        self.device = None   # chosen on the worker, at the first batch (no setup: decoding needs no actor)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "DecodeStage":
        return cls(cfg.source, cfg.execution.decode)

    def _device(self):
        if self.device is None and self.resources.num_gpus != 0:
            from mining.devices import stage_device

            self.device = stage_device(self.resources.num_gpus)
        return self.device

    def process(self, samples: list[Sample]) -> None:
        src = self.source
        device = self._device()
        ready: list[tuple[Sample, list[str], bytes]] = []
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
            ready.append((sample, captions, raw))
        if device is not None and device.type == "cuda":
            decoded = decode_images_on_device([raw for _, _, raw in ready], src.max_image_pixels, src.working_size,
                                              device)
        else:
            decoded = [decode_or_error(raw, src.max_image_pixels, src.working_size) for _, _, raw in ready]
        for (sample, captions, _), result in zip(ready, decoded):
            if isinstance(result, OverflowError):
                sample.drop_with(Drop.IMAGE_TOO_LARGE, str(result))
                continue
            if isinstance(result, Exception):   # PIL raises many types for corrupt data
                sample.drop_with(Drop.DECODE_ERROR, f"{type(result).__name__}: {result}")
                continue
            sample.image, sample.orig_size = result
            sample.frame_size = (sample.image.shape[1], sample.image.shape[0])
            sample.captions = captions
            sample.members = {}  # raw bytes are not needed downstream
