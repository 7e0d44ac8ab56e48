import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from mining.records import Drop, Entity, Pair, Sample
from mining.schemas import SchemaError, pairs_arrow_schema, validate
from mining.sinks.reader import iter_records, read_pairs
from mining.sinks.writer import write_shard
from mining.masks import encode as encode_rle


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 17, 23)) > 0.6
    rles = encode_rle(masks)
    decoded = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)
    np.testing.assert_array_equal(decoded, masks)
    assert list(mask_utils.area(rles)) == list(masks.sum((1, 2)))
    assert encode_rle(np.zeros((0, 5, 5), bool)) == []


def kept_sample(key, index, size, tiny_cfg_unused=None):
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 6:, :4] = True
    s = Sample(shard="in/abc.tar", shard_stem="abc", key=key, index=index, shard_size=size,
               captions=["a red box and a dog"], orig_size=(24, 20), frame_size=(12, 10),
               entities=[Entity("box", "red box", (2, 9), 0, ["red"]), Entity("dog", "dog", (16, 19), 0)],
               mask_scores=np.array([0.9, 0.8], np.float32),
               pairs=[Pair(0, 0, 0.31, 0.05, 0.7, [0.3, 0.32]), Pair(1, 1, 0.25, 0.01, 0.6, [0.2, 0.3])])
    s.rles = [{"size": r["size"], "counts": r["counts"].decode()} for r in encode_rle(masks)]
    return s, masks


def test_writer_and_reader_round_trip(tmp_path):
    a, masks = kept_sample("a", 1, 3)
    b, _ = kept_sample("b", 0, 3)
    dropped = Sample(shard="in/abc.tar", shard_stem="abc", key="c", index=2, shard_size=3).drop_with(Drop.NO_MASKS)
    marker = write_shard([a, dropped, b], str(tmp_path), "0123456789abcdef")
    assert marker["images_in"] == 3 and marker["images_with_pairs"] == 2 and marker["pairs"] == 4
    assert marker["drops"] == {"no_masks": 1} and marker["nouns"] == {"box": 2, "dog": 2}
    records = list(iter_records(str(tmp_path)))
    assert [r.key for r in records] == ["b", "a"], "records follow input order"
    rec = records[1]
    np.testing.assert_array_equal(rec.masks[0].decode(), masks[0])
    assert rec.masks[0].area == 18 and rec.masks[0].bbox == [3.0, 2.0, 6.0, 3.0]
    assert rec.pairs[0].noun == "box" and rec.pairs[0].scale_similarities == [0.3, 0.32]
    assert (rec.width, rec.height, rec.orig_width, rec.orig_height) == (12, 10, 24, 20)
    table = read_pairs(str(tmp_path))
    assert table.schema.equals(pairs_arrow_schema()) and table.num_rows == 4
    assert sorted(table.column("noun").to_pylist()) == ["box", "box", "dog", "dog"]
    assert pq.read_metadata(tmp_path / "pairs" / "abc.parquet").num_rows == 4
    done = json.loads((tmp_path / "_done" / "abc.json").read_text())
    assert done["config_hash"] == "0123456789abcdef"


def test_rewrite_is_byte_identical(tmp_path, tiny_cfg):
    a, _ = kept_sample("a", 0, 1)
    write_shard([a], str(tmp_path), "0123456789abcdef")
    first = (tmp_path / "shards" / "abc.tar").read_bytes()
    write_shard([a], str(tmp_path), "0123456789abcdef")
    assert (tmp_path / "shards" / "abc.tar").read_bytes() == first


def test_record_schema_rejects_malformed_records():
    with pytest.raises(SchemaError, match="record"):
        validate("record", {"schema_version": "ovmine.record/1", "key": "x"})
    good_pair = {"mask_index": 0, "entity_index": 0, "noun": "n", "phrase": "n", "similarity": 2.0, "margin": 0,
                 "probability": 0.5, "scale_similarities": [1.0]}
    with pytest.raises(SchemaError, match="pairs/0/similarity"):
        validate("record", {"schema_version": "ovmine.record/1", "key": "x", "shard": "s", "captions": ["c"],
                            "width": 1, "height": 1, "orig_width": 1, "orig_height": 1, "image": None,
                            "entities": [{"noun": "n", "phrase": "n", "span": [0, 1], "caption_index": 0,
                                          "adjectives": []}],
                            "masks": [{"segmentation": {"size": [1, 1], "counts": "01"}, "bbox": [0, 0, 1, 1],
                                       "area": 1, "score": 1.0}],
                            "pairs": [good_pair]})
