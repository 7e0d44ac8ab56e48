"""Caption -> entities: the visual nouns a mask can be matched to (the stage is `mining.stages.entities`)."""
from mining.entities.spacy_parser import SpacyEntityParser

__all__ = ["SpacyEntityParser"]
