"""Entities: the visual nouns of each image's captions (spaCy, or an LLM with spaCy as its fallback), the things a
mask can be matched to."""
from __future__ import annotations

from mining.config import EntitiesConfig, RunConfig, StageResources
from mining.entities.spacy_parser import SpacyEntityParser
from mining.records import Drop, Sample
from mining.stages.base import Stage


class EntityStage(Stage):
    name = "entities"
    reads = ("captions",)
    fills = ("entities",)

    def __init__(self, entities: EntitiesConfig, resources: StageResources) -> None:
        super().__init__(resources)
        self.settings = entities
        self.parser = None   # SpacyEntityParser or LLMEntityParser

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "EntityStage":
        return cls(cfg.entities, cfg.execution.entities)

    def setup(self) -> None:
        if self.settings.kind == "llm":   # a transformers model runs where execution.entities.num_gpus says
            from mining.devices import stage_device
            from mining.entities.llm_parser import LLMEntityParser

            self.parser = LLMEntityParser(self.settings, device=stage_device(self.resources.num_gpus).type)
        else:
            self.parser = SpacyEntityParser(self.settings)

    def process(self, samples: list[Sample]) -> None:
        assert self.parser is not None
        images = [s.captions for s in samples]
        if self.settings.kind == "llm":
            parsed, fallbacks = self.parser.parse_counted(images)
            for sample, counted in zip(samples, fallbacks):
                sample.entity_fallbacks = dict(counted)
        else:
            parsed = self.parser.parse_batch(images)
        for sample, entities in zip(samples, parsed):
            sample.entities = entities
            if not sample.entities:
                sample.drop_with(Drop.NO_ENTITIES)
