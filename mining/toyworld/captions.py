"""Captions written like web alt-text about a scene: varied templates, colour and size adjectives, counted
plurals, synonyms, some things left unmentioned, nouns of things that are not there, and filler nouns."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from mining.toyworld.scene import Scene
from mining.toyworld.vocab import ABSENT_NOUNS, COLOURS, NUMBER_WORDS, THINGS, Category, Instance

PREFIXES = ("", "", "", "a picture of ", "a photo of ", "an illustration of ", "this image shows ",
            "a close-up view of ", "there is ", "stock photo: ")
STUFF_CLAUSES = {
    "grass": ("on the {n}", "lying in the {n}", "on top of the green {n}"),
    "water": ("floating on the {n}", "in the middle of the {n}", "over the blue {n}"),
    "sand": ("on the {n}", "lying in the {n}", "on a patch of {n}"),
    "snow": ("in the {n}", "on the white {n}", "on fresh {n}"),
    "sky": ("under a blue {n}", "with the {n} behind", "below the {n}"),
}


def _noun(rng: np.random.Generator, category: Category, synonym_rate: float) -> str:
    if category.synonyms and rng.random() < synonym_rate:
        return str(rng.choice(category.synonyms))
    return category.name


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _mentioned(rng: np.random.Generator, inst: Instance) -> bool:
    """Bigger, less hidden things get mentioned more often; some are left out as in real captions."""
    if inst.visible_fraction < 0.4:
        return rng.random() < 0.2
    if inst.mask.sum() < 80:
        return rng.random() < 0.5
    return rng.random() < 0.88


def _entity(noun: str, phrase: str, count: int = 1, colour: str | None = None) -> dict[str, object]:
    """What a caption says of one thing, in the LLM entity parser's answer schema: the truth a parser is scored on
    and the toy entity model learns from."""
    return {"noun": noun, "phrase": phrase, "count": count, "attributes": [colour] if colour else []}


def _thing_phrases(rng: np.random.Generator, things: list[Instance]) -> list[tuple[str, dict[str, object]]]:
    groups: dict[str, list[Instance]] = defaultdict(list)
    for inst in things:
        groups[inst.category.name].append(inst)
    phrases = []
    for insts in groups.values():
        category = insts[0].category
        noun = _noun(rng, category, 0.3)
        colours = {i.colour for i in insts}
        if len(insts) > 1 and rng.random() < 0.7:
            number = NUMBER_WORDS.get(len(insts), "several") if rng.random() < 0.8 else "some"
            colour = f"{insts[0].colour} " if len(colours) == 1 and rng.random() < 0.6 else ""
            phrase = f"{number} {colour}{category.plural_of(noun)}"
            count = len(insts) if number in NUMBER_WORDS.values() else 1   # "some", "several": no number said
            phrases.append((phrase, _entity(noun, phrase, count, colour.strip())))
            continue
        for inst in insts:
            words = []
            if inst.size_word and rng.random() < 0.4:
                words.append(inst.size_word)
            if rng.random() < 0.7:
                words.append(str(inst.colour))
            words.append(noun)
            colour = str(inst.colour) if str(inst.colour) in words else None
            phrases.append((f"{_article(words[0])} {' '.join(words)}", _entity(noun, " ".join(words), 1, colour)))
    rng.shuffle(phrases)
    return phrases


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _absent(rng: np.random.Generator, scene: Scene) -> tuple[str, dict[str, object]]:
    present = {i.category.name for i in scene.things}
    missing = [c for c in THINGS if c.name not in present]
    if missing and rng.random() < 0.5:
        noun = missing[int(rng.integers(len(missing)))].name
    else:
        noun = str(rng.choice(ABSENT_NOUNS))
    return f"{_article(noun)} {noun}", _entity(noun, noun)


def _stuff_clause(template: str, noun: str) -> tuple[str, dict[str, object]]:
    """"over the blue {n}" -> the clause, and the entity "blue sea" (its adjective, a colour, is an attribute)."""
    before = template.split("{n}")[0].split()
    adjective = before[-1] if before and before[-1] not in ("the", "a", "of") else None
    phrase = f"{adjective} {noun}" if adjective else noun
    return template.format(n=noun), _entity(noun, phrase, 1, adjective if adjective in COLOURS else None)


def caption_scene(rng: np.random.Generator, scene: Scene) -> list[str]:
    """Two captions: a detailed one and a short one (like a title), both possibly noisy."""
    return caption_scene_entities(rng, scene)[0]


def caption_scene_entities(rng: np.random.Generator,
                           scene: Scene) -> tuple[list[str], list[list[dict[str, object]]]]:
    """`caption_scene`'s captions (the same, for the same rng), and for each the entities it names, in caption
    order: every category noun (a synonym as written), and the nouns of things that are not there. Filler
    ("some shapes", "on a plain background", "abstract art") names none."""
    mentioned = [i for i in scene.things if _mentioned(rng, i)]
    phrases = _thing_phrases(rng, mentioned) or [("some shapes", None)]
    if rng.random() < 0.2:
        phrases.append(_absent(rng, scene))
    prefix = str(rng.choice(PREFIXES))
    clauses = []
    for inst in scene.stuff:
        if rng.random() < 0.75:
            noun = _noun(rng, inst.category, 0.3)
            clauses.append(_stuff_clause(str(rng.choice(STUFF_CLAUSES[inst.category.name])), noun))
    if scene.ground == "plain":
        clauses.append((str(rng.choice(("isolated on a grey background", "on a plain background", "on grey", ""))),
                        None))
    detailed = f"{prefix}{_join([p for p, _ in phrases])} {' '.join(c for c, _ in clauses)}".strip()
    detailed_entities = [e for _, e in phrases + clauses if e is not None]

    short_entities = []
    if scene.things and rng.random() < 0.7:
        biggest = max(scene.things, key=lambda i: i.mask.sum())
        noun = _noun(rng, biggest.category, 0.3)
        colour = f"{biggest.colour} " if rng.random() < 0.5 else ""
        short = f"{_article(colour or noun)} {colour}{noun}"
        short_entities.append(_entity(noun, f"{colour}{noun}", 1, colour.strip()))
        if scene.stuff and rng.random() < 0.5:
            stuff = scene.stuff[-1].category.name
            short += f" and {stuff}"
            short_entities.append(_entity(stuff, stuff))
    else:
        short = str(rng.choice(("colourful shapes", "abstract art", "simple geometry", "wallpaper design")))
    captions = [detailed[0].upper() + detailed[1:] + ".", short[0].upper() + short[1:]]
    return captions, [detailed_entities, short_entities]
