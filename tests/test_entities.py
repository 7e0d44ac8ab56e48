import json
import subprocess
import sys

import pytest

from mining.config import EntitiesConfig
from mining.entities import SpacyEntityParser


@pytest.fixture(scope="module")
def parser():
    return SpacyEntityParser(EntitiesConfig())


def nouns(parser, *captions):
    return [e.noun for e in parser.parse(list(captions))]


def test_nouns_are_singular_lemmas_with_adjectives_and_spans(parser):
    caption = "Two red circles on green grass."
    entities = parser.parse([caption])
    assert [e.noun for e in entities] == ["circle", "grass"]
    circle = entities[0]
    assert circle.phrase == "red circles" and circle.adjectives == ["red"]
    assert caption[circle.span[0]:circle.span[1]].lower() == circle.phrase


def test_stop_list_and_pronouns_are_dropped(parser):
    assert nouns(parser, "A picture of a dog on top of a table.") == ["dog", "table"]
    assert nouns(parser, "It is a time of love.") == []
    assert nouns(parser, "a close-up of the sky") == ["sky"]


def test_compounds_kept(parser):
    assert "tennis racket" in nouns(parser, "A man holding a tennis racket.")


def test_captions_are_merged_and_deduplicated(parser):
    entities = parser.parse(["Two dogs on a sofa.", "A dog sleeping on the couch next to a cat."])
    assert [e.noun for e in entities] == ["dog", "sofa", "couch", "cat"]
    assert [e.caption_index for e in entities] == [0, 0, 1, 1]


def test_counts_from_numerals_merge_across_captions(parser):
    entities = parser.parse(["Two red circles, 3 stars and a square.", "A circle and four squares."])
    counts = {e.noun: e.count for e in entities}
    assert counts == {"circle": 2, "star": 3, "square": 4}
    assert "count" not in parser.parse(["A dog."])[0].to_json()


def test_extra_stop_nouns_and_limit():
    p = SpacyEntityParser(EntitiesConfig(extra_stop_nouns=["Dog"], max_entities=1))
    assert [e.noun for e in p.parse(["A dog, a cat and a bird."])] == ["cat"]


def test_parse_command_prints_one_object_per_caption(tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("Two red circles on green grass.\n\nA cat on a mat.\n")
    out = subprocess.run([sys.executable, "-m", "mining.cli", "parse", str(captions)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    docs = [json.loads(line) for line in out]
    assert [d["caption"] for d in docs] == ["Two red circles on green grass.", "A cat on a mat."]
    assert [e["noun"] for e in docs[1]["entities"]] == ["cat", "mat"]
    piped = subprocess.run([sys.executable, "-m", "mining.cli", "parse"], input="three boys\n",
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(piped)["entities"][0]["noun"] == "boy"


def test_score_nouns_known_answer():
    from mining.entities.evaluate import score_nouns

    score = score_nouns([["dog", "cat"], [], ["sky"]], [["dog"], ["tree"], ["sky", "sea"]])
    assert (score.true_positives, score.false_positives, score.false_negatives) == (2, 1, 2)
    assert score.precision == pytest.approx(2 / 3) and score.recall == pytest.approx(0.5)
    with pytest.raises(ValueError):
        score_nouns([["a"]], [])


def test_parser_on_the_labelled_caption_set():
    result = subprocess.run([sys.executable, "-m", "mining.cli", "parse", "--labelled",
                             "tests/data/captions_labelled.jsonl"], capture_output=True, text=True, check=True)
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 45 and all({"missed", "extra"} <= set(d) for d in docs)
    line = result.stderr.strip().splitlines()[-1]
    precision = float(line.split("precision ")[1].split(",")[0])
    recall = float(line.split("recall ")[1].split(" ")[0])
    assert precision >= 0.9 and recall >= 0.9, line
    bad = subprocess.run([sys.executable, "-m", "mining.cli", "parse", "--labelled"], input="not json\n",
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "--labelled line 1" in bad.stderr


# --- item 4: capitalised plurals (tagged PROPN by the small model) are singularised and merge


def test_capitalised_plural_is_singular_and_merges(parser):
    assert nouns(parser, "Dogs running in a park.") == ["dog", "park"]
    entities = parser.parse(["Dogs running in a park.", "A dog on the grass."])
    assert [(e.noun, e.caption_index) for e in entities] == [("dog", 0), ("park", 0), ("grass", 1)]
    assert entities[0].phrase == "dogs"
    assert nouns(parser, "Giraffes standing by a fence.") == ["giraffe", "fence"]


# --- item 5: the stop-list applies to the whole compound, compounds are collected whole


def test_compound_with_stop_listed_head_is_kept(parser):
    assert nouns(parser, "A picture frame hanging on the wall.") == ["picture frame", "wall"]
    assert nouns(parser, "A wooden door frame in a white wall.") == ["door frame", "wall"]
    assert nouns(parser, "An old TV set on a table top.") == ["tv set", "table top"]
    assert nouns(parser, "Stock photo of a dog.") == ["dog"]  # every word framing: still dropped
    assert nouns(parser, "A side view of a car.") == ["car"]


def test_compound_chain_is_collected_whole(parser):
    assert nouns(parser, "A traffic light pole near the road.") == ["traffic light pole", "road"]
    assert nouns(parser, "A kitchen table cloth.") == ["kitchen table cloth"]


# --- item 6: colour words go to the adjectives, never into the noun


def test_colour_compound_is_an_adjective(parser):
    caption = "An orange cross on a green lawn."
    cross, lawn = parser.parse([caption])
    assert (cross.noun, cross.adjectives, cross.phrase) == ("cross", ["orange"], "orange cross")
    assert (lawn.noun, lawn.adjectives) == ("lawn", ["green"])
    assert caption[cross.span[0]:cross.span[1]].lower() == cross.phrase
    assert nouns(parser, "A man in white holding an orange.") == ["man", "orange"]
    assert nouns(parser, "Oranges in a bowl.") == ["orange", "bowl"]


# --- item 7: multi-word object names, irregular plurals, time words


def test_multi_word_object_names_are_one_noun(parser):
    assert nouns(parser, "A teddy bear sitting on a bed.") == ["teddy bear", "bed"]
    assert nouns(parser, "Teddy bears on a shelf.") == ["teddy bear", "shelf"]
    assert nouns(parser, "A parking meter next to a fire hydrant.") == ["parking meter", "fire hydrant"]
    assert nouns(parser, "A woman on a cell phone with a wine glass.") == ["woman", "cell phone", "wine glass"]
    entities = parser.parse(["Two hot dogs and an ice cream under a traffic light."])
    assert [(e.noun, e.count) for e in entities] == [("hot dog", 2), ("ice cream", 1), ("traffic light", 1)]
    caption = "A red fire hydrant."
    (hydrant,) = parser.parse([caption])
    assert (hydrant.phrase, hydrant.adjectives) == ("red fire hydrant", ["red"])
    assert caption[hydrant.span[0]:hydrant.span[1]].lower() == hydrant.phrase


def test_irregular_plurals(parser):
    assert [(e.noun, e.count) for e in parser.parse(["Two geese near three mice."])] == [("goose", 2), ("mouse", 3)]
    assert nouns(parser, "Knives on the shelves.") == ["knife", "shelf"]
    assert nouns(parser, "People on a street.", "A person.") == ["person", "street"]


def test_time_words_are_stop_nouns(parser):
    assert nouns(parser, "Cows grazing in a field during the afternoon.") == ["cow", "field"]
    assert nouns(parser, "Giraffes in the evening.") == ["giraffe"]
    assert nouns(parser, "A lighthouse at sunset.") == ["lighthouse", "sunset"]


def test_object_names_lexicon_file_and_loaded_once(monkeypatch):
    from mining.entities import lexicon

    text = (lexicon.OBJECT_NAMES_PATH).read_text(encoding="utf-8")
    assert text.startswith("#") and "COCO" in text.split("\n", 1)[0] + text
    names = [n for n in text.splitlines() if n and not n.startswith("#")]
    assert {"parking meter", "teddy bear", "traffic light", "hot dog", "wine glass"} <= set(names)
    assert all(n == n.lower() and " " in n and n.isascii() for n in names)
    parser = SpacyEntityParser(EntitiesConfig())
    monkeypatch.setattr(lexicon, "load_object_names", lambda *a, **k: pytest.fail("lexicon re-read"))
    assert nouns(parser, "A fire hydrant.") == ["fire hydrant"]


def test_keep_compounds_off_keeps_the_head_only():
    p = SpacyEntityParser(EntitiesConfig(keep_compounds=False))
    # a listed object name is one noun, not a compound
    assert [e.noun for e in p.parse(["A tennis racket and a kitchen table cloth."])] == ["tennis racket", "cloth"]


def test_score_nouns_exact_and_head_modes():
    from mining.entities.evaluate import score_nouns

    got, want = [["light pole", "dog"]], [["traffic light pole", "dog"]]
    exact, head = score_nouns(got, want, "exact"), score_nouns(got, want, mode="head")
    assert (exact.true_positives, exact.false_positives, exact.false_negatives) == (1, 1, 1)
    assert (head.true_positives, head.false_positives, head.false_negatives) == (2, 0, 0)
    with pytest.raises(ValueError):
        score_nouns(got, want, "fuzzy")


def test_labelled_set_exact_score():
    from mining.entities.evaluate import score_file

    scores = score_file(SpacyEntityParser(EntitiesConfig()), "tests/data/captions_labelled.jsonl")
    assert scores["exact"].precision >= 0.95 and scores["exact"].recall >= 0.95, scores
    assert scores["head"].precision >= scores["exact"].precision


def test_toy_world_vocabulary_parses(parser):
    """The toy world's caption forms (mining/toyworld/captions.py) with every colour and noun it uses."""
    from mining.toyworld.vocab import COLOURS, STUFF, THINGS

    for category in THINGS:
        for noun in (category.name, *category.synonyms):
            for colour in COLOURS:
                plural = category.plural_of(noun)
                entities = parser.parse([f"Two {colour} {plural} on top of the {colour} lawn."])
                assert [(e.noun, e.count) for e in entities] == [(noun, 2), ("lawn", 1)], (colour, plural)
                article = "An" if colour[0] in "aeiou" else "A"
                entity = parser.parse([f"{article} {colour} {noun} and grass"])[0]
                assert (entity.noun, entity.adjectives) == (noun, [colour]), (colour, noun)
    for category in STUFF:
        for noun in (category.name, *category.synonyms):
            assert nouns(parser, f"A star lying in the {noun}.") == ["star", noun]
            assert nouns(parser, f"A white {noun}") == [noun]


def test_entities_remember_every_caption_that_names_them(parser):
    entities = {e.noun: e for e in parser.parse(["A dog on the grass.", "A dog chasing a cat."])}
    assert entities["dog"].captions() == [0, 1] and entities["cat"].captions() == [1]
    assert "mentions" not in entities["dog"].to_json()


def test_a_batch_of_images_parses_as_each_image_alone(parser):
    """parse_batch runs spaCy once over every caption of the batch; each image still gets its own entities."""
    images = [["Two dogs on a sofa.", "A dog sleeping on the couch next to a cat."], ["A red fire hydrant."],
              ["It is sunny."], ["Three geese near a teddy bear.", "Geese and a bear.", "A teddy bear on grass."]]
    assert parser.parse_batch(images) == [parser.parse(captions) for captions in images]
    assert parser.parse_batch(images)[2] == [] and parser.parse_batch([]) == []


# --- issue 25: a colour-named thing in a list of things; a gerund after a noun is a verb, not part of the noun


def test_a_colour_named_thing_listed_among_uncoloured_things_is_a_thing(parser):
    assert nouns(parser, "Lemons, orange and limes piled in a crate.") == ["lemon", "orange", "lime", "crate"]
    assert nouns(parser, "A basket holding pear and orange and apple.")[-3:] == ["pear", "orange", "apple"]
    # beside a coloured thing, a bare colour word is as likely that thing's colour: no entity
    assert "orange" not in nouns(parser, "A red kite and the orange on the beach.")
    assert nouns(parser, "A woman in green on a bench.") == ["woman", "bench"]


def test_a_gerund_after_a_noun_splits_the_chunk(parser):
    entities = parser.parse(["Three horses eating hay near a barn."])
    assert [e.noun for e in entities] == ["horse", "hay", "barn"]
    assert entities[0].count == 3 and entities[0].phrase == "horses"
    assert nouns(parser, "A girl with a hat and backpack walking to a bus.") == ["girl", "hat", "backpack", "bus"]
    assert nouns(parser, "A goat drinking milk from a bucket.") == ["goat", "milk", "bucket"]
    # nouns made from verbs stay nouns; gerunds inside a known object name stay in it
    assert nouns(parser, "A brick building behind an oil painting.") == ["brick building", "oil painting"]
    assert nouns(parser, "A frying pan on the stove.") == ["frying pan", "stove"]
    assert nouns(parser, "An airport waiting room.") == ["airport waiting room"]
    assert nouns(parser, "A city parking lot at night.")[0] == "city parking lot"
