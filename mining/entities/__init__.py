"""Caption -> entities: the visual nouns a mask can be matched to."""
from mining.entities.spacy_parser import EntityStage, SpacyEntityParser

__all__ = ["EntityStage", "SpacyEntityParser"]
