"""Nouns that name no region of the image: positions, framing, quantities and abstractions.

Drawn from the filler of web alt-text ("a picture of", "on top of", "a bunch of") and GRIT's abstract-noun
filter (Kosmos-2: "time", "love", "freedom"). Times of day are no region either
("in the evening"), though what they show is ("sunset", "sky"). "frame" is not listed: alone or in "picture
frame" and "door frame" it is an object more often than the framing of the shot. The parser applies the list to
the whole compound noun ("table top" stays). Users extend it with entities.extra_stop_nouns.
"""

STOP_NOUNS: frozenset[str] = frozenset(
    """
    top bottom side front back middle center centre left right edge corner end part half
    picture image photo photograph pic shot snapshot view scene closeup close-up background foreground
    illustration drawing render rendering stock vector screenshot thumbnail
    lot lots bunch couple group pair set number variety kind type sort piece pieces amount range series
    way thing things something anything everything nothing stuff one ones other others
    time day night moment today year years while
    morning afternoon evening daytime nighttime noon midday midnight dusk dawn
    love freedom life happiness fun beauty idea concept style color colour shape size
    area place spot location distance direction position
    """.split()
)
