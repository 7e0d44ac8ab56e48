"""Refine: a vision-language model writes one more caption per image (`captions.refine`), added after the
image's own with its provenance, before entities are parsed from them all. Images go through the model
`execution.refine.batch_size` at a time, on the device its `num_gpus` gives. Built only when captions.refine
is set."""
from __future__ import annotations

from mining.config import ModelStageResources, RefineConfig, RunConfig
from mining.records import REFINED, Sample
from mining.stages.base import Stage


class RefineStage(Stage):
    name = "refine"
    reads = ("image", "captions")   # fills nothing for sure: an image its model has no words for keeps its own

    def __init__(self, refine: RefineConfig, resources: ModelStageResources) -> None:
        super().__init__(resources)
        self.settings = refine
        self.refiner = None   # a CaptionRefiner, loaded on the worker

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "RefineStage":
        if cfg.captions.refine is None:
            raise ValueError("captions.refine is not set: a run without it has no refine stage")
        return cls(cfg.captions.refine, cfg.execution.refine)

    def setup(self) -> None:
        from mining.captions.refiner import CaptionRefiner
        from mining.devices import stage_device   # torch: imported on the worker

        res = self.resources
        self.refiner = CaptionRefiner(self.settings, stage_device(res.num_gpus).type, res.precision)

    def process(self, samples: list[Sample]) -> None:
        assert self.refiner is not None
        ready = [s for s in samples if s.image is not None]   # a dropped sample has released its image
        if not ready:
            return
        for sample, text in zip(ready, self.refiner.refine([s.image for s in ready])):
            if text:   # an empty answer adds nothing: the image keeps its own captions
                sample.add_caption(text, REFINED)
