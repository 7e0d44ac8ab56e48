"""One image's entities from its captions', whichever parser read them."""
from __future__ import annotations

from collections.abc import Iterable

from mining.records import Entity


def merge_entities(per_caption: Iterable[list[Entity]], max_entities: int) -> list[Entity]:
    """One entity per noun, in caption order (the first mention wins), remembering every caption that names it;
    "two discs" in one caption and "a disc" in another are two of them."""
    merged: dict[str, Entity] = {}
    for entities in per_caption:
        for entity in entities:
            kept = merged.setdefault(entity.noun, entity)
            kept.count = max(kept.count, entity.count)
            if entity.caption_index not in kept.mentions:
                kept.mentions.append(entity.caption_index)
    return list(merged.values())[:max_entities]
