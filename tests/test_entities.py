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
    assert len(docs) == 25 and all({"missed", "extra"} <= set(d) for d in docs)
    line = result.stderr.strip().splitlines()[-1]
    precision = float(line.split("precision ")[1].split(",")[0])
    recall = float(line.split("recall ")[1].split(" ")[0])
    assert precision >= 0.9 and recall >= 0.9, line
    bad = subprocess.run([sys.executable, "-m", "mining.cli", "parse", "--labelled"], input="not json\n",
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "--labelled line 1" in bad.stderr
