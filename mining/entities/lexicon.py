"""Word lists the parser needs beside spaCy's model: colour terms, irregular plurals, multi-word object names."""
from __future__ import annotations

from pathlib import Path

OBJECT_NAMES_PATH = Path(__file__).with_name("object_names.txt")

# Basic colour terms (Berlin & Kay's eleven, both greys) and the common web-caption extras. The small model
# tags "orange" in "orange cross" as a noun compound; a colour describes the thing, it never names it.
COLOURS: frozenset[str] = frozenset(
    """
    red orange yellow green blue purple pink brown black white grey gray
    beige tan navy teal turquoise violet maroon magenta cyan gold golden silver
    """.split()
)
# colour words that also name a countable thing: "an orange", "oranges"
COLOUR_OBJECTS: frozenset[str] = frozenset({"orange"})

# Things named by an -ing word whose stem is also a verb: where the small model leaves a gerund inside a noun
# chunk ("a dog drinking water"), the parser takes an -ing word for the verb unless it is one of these.
ING_NOUNS: frozenset[str] = frozenset(
    """
    awning bedding building carving ceiling clothing covering crossing dressing drawing dwelling etching engraving
    fencing filling flooring frosting housing icing landing lighting molding moulding opening painting paneling
    piping planting plumbing railing recording seating setting siding stuffing tiling topping tubing wedding
    wiring wrapping
    """.split()
)

# Names of places and things made of a gerund and a noun that the datasets' object names (object_names.txt) lack:
# merged into one noun like those, so that "an airport waiting room" keeps its gerund ("drinking water" is left
# out: "a dog drinking water" is the common caption).
GERUND_COMPOUNDS: tuple[str, ...] = (
    "baking dish", "baking sheet", "boarding pass", "changing room", "changing table", "climbing wall",
    "cutting board", "dining room", "dressing room", "dressing table", "drinking fountain", "fishing boat",
    "fitting room", "hiking trail", "landing strip", "living room", "meeting room", "mixing bowl", "parking garage",
    "parking lot", "parking space", "racing car", "reading glasses", "rowing boat", "running shoe", "sailing boat",
    "serving dish", "serving tray", "shopping center", "shopping mall", "skating rink", "waiting room",
    "walking path", "washing line",
)

# Irregular plurals the small model tags as adjectives or leaves unlemmatised ("two geese", "oxen", "cacti").
# Only words that are never verbs or adjectives, since the attribute ruler applies them whatever the context.
# "people" -> "person" so that "people" and "a person" merge into COCO's category.
IRREGULAR_PLURALS: dict[str, str] = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
    "geese": "goose", "teeth": "tooth", "feet": "foot", "oxen": "ox", "cacti": "cactus", "fungi": "fungus",
    "knives": "knife", "shelves": "shelf", "wolves": "wolf", "calves": "calf", "loaves": "loaf",
    "scarves": "scarf", "hooves": "hoof", "wives": "wife", "thieves": "thief",
}


def load_object_names(path: Path = OBJECT_NAMES_PATH) -> list[str]:
    """Multi-word object names, one per line; '#' starts a comment line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def plurals(name: str, irregular: dict[str, list[str]]) -> list[str]:
    """Plurals of a name's head word ('hot dog' -> 'hot dogs', 'chest of drawers' -> 'chests of drawers').

    irregular maps a singular to its irregular plurals ("knife" -> ["knives"]); the regular spelling is always
    added too, since matching a form nobody writes costs nothing.
    """
    words = name.split()
    i = words.index("of") - 1 if "of" in words[1:] else len(words) - 1
    word = words[i]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        regular = word + "es"
    elif word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        regular = word[:-1] + "ies"
    else:
        regular = word + "s"
    return [" ".join(words[:i] + [form] + words[i + 1:]) for form in dict.fromkeys([*irregular.get(word, []), regular])]
