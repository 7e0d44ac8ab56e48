"""The toy world's vocabulary: its categories (with the synonyms captions may use), colours and sizes.

Categories follow COCO panoptic's split: "things" are countable shapes, "stuff" the textured grounds and sky.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    kind: str                       # "thing" or "stuff"
    synonyms: tuple[str, ...] = ()  # other singular nouns a caption may use
    plural: str | None = None       # irregular plurals; regular ones add "s"

    def plural_of(self, noun: str) -> str:
        if noun == self.name and self.plural:
            return self.plural
        return noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")


THINGS: tuple[Category, ...] = (
    Category(1, "circle", "thing", ("disc", "disk")),
    Category(2, "square", "thing", ("box",)),
    Category(3, "triangle", "thing"),
    Category(4, "star", "thing"),
    Category(5, "cross", "thing"),
    Category(6, "ring", "thing", ("donut", "hoop")),
    Category(7, "heart", "thing"),
)
STUFF: tuple[Category, ...] = (
    Category(8, "grass", "stuff", ("lawn", "meadow")),
    Category(9, "water", "stuff", ("sea", "lake")),
    Category(10, "sand", "stuff", ("beach",)),
    Category(11, "snow", "stuff"),
    Category(12, "sky", "stuff"),
)
CATEGORIES: tuple[Category, ...] = THINGS + STUFF
BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}
GROUNDS: tuple[str, ...] = ("grass", "water", "sand", "snow")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (30, 160, 60), "blue": (35, 60, 215), "yellow": (240, 215, 30),
    "orange": (245, 135, 20), "purple": (135, 45, 175), "pink": (245, 130, 190), "white": (245, 245, 245),
    "black": (25, 25, 25),
}

# nouns of things that never appear in the world: web alt-text names what is not there
ABSENT_NOUNS: tuple[str, ...] = ("dog", "tree", "car", "person", "bird", "boat", "house", "cloud")

NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass
class Instance:
    """One rendered thing or stuff region of a scene, with what its caption may say of it."""

    category: Category
    mask: "object"                  # bool[H, W], the visible part
    colour: str | None = None
    size_word: str | None = None    # "small" / "large" / None
    visible_fraction: float = 1.0
    extra: dict = field(default_factory=dict)
