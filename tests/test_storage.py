"""The storage layer: one Location API behaves the same on a local folder and on S3 (a loopback server)."""
import os
import pickle

import boto3
import pytest

from mining.storage import Location, S3Options


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return Location(str(tmp_path / "root"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"storage-{request.node.name.lower().replace('_', '-').replace('[', '-').replace(']', '')}"[:60]
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return Location(f"s3://{bucket}/root", S3Options(endpoint_url=endpoint))


def test_write_read_list_and_delete_alike_locally_and_on_s3(root):
    assert not root.exists() and root.list() == [] and root.entry_names() == []
    (root / "b.json").write_atomic(b"2")
    root.join("sub", "c.json").write_atomic(b"3")
    (root / "a.json").write_atomic(b"1")
    (root / "a.txt").write_atomic(b"x")
    assert [f.name for f in root.list(".json")] == ["a.json", "b.json"], "files only, sorted, by suffix"
    assert root.entry_names() == ["a.json", "a.txt", "b.json", "sub"]
    assert [f.read() for f in root.list(".json")] == [b"1", b"2"]
    assert root.list(".json")[0].s3 == root.s3, "what a listing returns is reached as its folder"
    (root / "a.json").write_atomic(b"replaced")
    assert (root / "a.json").read() == b"replaced"
    (root / "a.json").delete()
    (root / "a.json").delete()   # deleting what is gone is no error
    assert not (root / "a.json").exists()
    with pytest.raises(FileNotFoundError):
        (root / "a.json").read()
    root.join("sub").delete_tree()
    root.join("sub").delete_tree()
    assert root.entry_names() == ["a.txt", "b.json"]


def test_publish_copies_a_local_file_whole(root, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    (root / "big.bin").publish(str(big))
    assert (root / "big.bin").read() == big.read_bytes()


def test_a_location_pickles_with_its_settings_and_names_itself():
    where = Location("s3://bucket/out/", S3Options(endpoint_url="http://127.0.0.1:9", max_attempts=3))
    again = pickle.loads(pickle.dumps(where))
    assert again == where and again.s3.max_attempts == 3
    assert (where / "shards").uri == "s3://bucket/out/shards"
    assert str(where.join("a", "b.tar")) == "s3://bucket/out/a/b.tar"
    assert where.join("a", "b.tar").name == "b.tar" and where.join("a", "b.tar").parent.uri == "s3://bucket/out/a"
    assert where.at("s3://other/x.tar").s3 == where.s3, "an input a manifest names is reached alike"
    assert Location.of(where) is where and Location.of("x", where.s3) == Location("x", where.s3)
    assert Location.of("x").s3 == S3Options()
    assert Location("rel/x", where.s3).absolute() == Location(os.path.abspath("rel/x"), where.s3)
    assert where.absolute() is where


def test_a_failed_local_write_leaves_no_temporary(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError, match="could not write .*nothing was committed"):
        Location(str(tmp_path / "file" / "x.json")).write_atomic(b"{}")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "x.json").mkdir()   # the rename onto a folder fails after the temporary was written
    with pytest.raises(OSError):
        Location(str(folder / "x.json")).write_atomic(b"{}")
    assert sorted(p.name for p in folder.iterdir()) == ["x.json"]


def test_sweep_removes_only_writer_temporaries(tmp_path):
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "00000.tar.tmp-12-34").write_bytes(b"left by a killed run")
    (out / "shards" / "00000.tar").write_bytes(b"committed")
    (out / "notes.tmp-mine").write_bytes(b"not ours")
    assert Location(str(out)).sweep_temporaries(("shards",)) == 1
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["00000.tar", "notes.tmp-mine"]
