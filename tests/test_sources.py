import json

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes, scene, write_tar
from mining.records import Drop
from mining.sources import expand_inputs, read_shard
from mining.sources.decode import decode_image, decode_images_on_device, extract_captions
from mining.stages.decode import DecodeStage
from mining.sources.uris import InputError
from mining.toyworld.make import make_shards


def test_expand_dir_brace_glob_and_file(tmp_path):
    paths = make_shards(tmp_path / "d", shards=3, per_shard=1)
    as_str = [str(p) for p in paths]
    assert expand_inputs([str(tmp_path / "d")]) == as_str
    assert expand_inputs([str(tmp_path / "d" / "{00000..00001}.tar")]) == as_str[:2]
    assert expand_inputs([str(tmp_path / "d" / "*.tar")]) == as_str
    assert expand_inputs([as_str[2], as_str[0], as_str[2]]) == [as_str[2], as_str[0]]


def test_expand_rejects_missing_and_clashing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs([str(tmp_path / "missing.tar")])
    a = make_shards(tmp_path / "a", shards=1, per_shard=1)[0]
    b = make_shards(tmp_path / "b", shards=1, per_shard=1)[0]
    with pytest.raises(InputError, match="same output name"):
        expand_inputs([str(a), str(b)])


def test_read_shard_groups_members_by_key(tmp_path):
    shard = write_tar(tmp_path / "s.tar", [("k1.jpg", b"x"), ("k1.txt", b"a cat"), ("k2.png", b"y"),
                                           ("k2.json", b"{}"), ("k3.txt", b"only text")])
    samples = read_shard(str(shard))
    assert [s.key for s in samples] == ["k1", "k2", "k3"]
    assert samples[0].members == {"jpg": b"x", "txt": b"a cat"}
    assert all(s.shard_size == 3 and s.shard_stem == "s" for s in samples)
    assert read_shard(str(shard), max_samples=2)[-1].key == "k2"


def test_truncated_tar_keeps_complete_samples(tmp_path):
    members = [(f"k{i}.{ext}", jpeg_bytes(scene(i)) if ext == "jpg" else b"a red square")
               for i in range(4) for ext in ("jpg", "txt")]
    full = write_tar(tmp_path / "full.tar", members)
    data = full.read_bytes()
    cut = tmp_path / "cut.tar"
    # cut inside the third sample's image
    offset = data.index(b"k2.jpg") + 512 + 100
    cut.write_bytes(data[:offset])
    samples = read_shard(str(cut))
    assert [s.key for s in samples][:2] == ["k0", "k1"]
    assert all(s.alive for s in samples[:2])
    assert samples[-1].shard_errors, "the truncation is reported"
    assert all(not s.alive for s in samples[2:])
    assert {s.drop for s in samples[2:]} == {Drop.TRUNCATED_TAR}


def test_empty_or_unreadable_shard_is_a_sentinel(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar file at all" * 40)
    samples = read_shard(str(bad))
    assert len(samples) == 1 and samples[0].sentinel and samples[0].shard_errors


def test_captions_from_txt_and_json_in_order():
    members = {"txt": b"  a  dog\n", "json": json.dumps({"captions": ["A cat.", "a dog", ""], "caption": "x"}).encode()}
    assert extract_captions(members, ["captions", "caption"], 5) == (["a dog", "A cat.", "x"], False)
    assert extract_captions(members, ["captions"], 2)[0] == ["a dog", "A cat."]
    assert extract_captions({"txt": b"\xff\xfe bad"}, ["captions"], 1) == ([], True)
    assert extract_captions({"txt": b"\xff bad", "json": b'{"caption": "ok"}'}, ["caption"], 1) == (["ok"], True)


def test_decode_applies_exif_rotation_and_resizes():
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image, orig = decode_image(jpeg_bytes(wide, exif=exif), max_pixels=10**6, working_size=1000)
    assert image.shape == (80, 40, 3) and orig == (40, 80)
    assert image[:20].mean() > 200 and image[60:].mean() < 50   # the white half is now on top
    small, orig = decode_image(jpeg_bytes(np.zeros((300, 600, 3), np.uint8)), 10**6, working_size=100)
    assert small.shape == (50, 100, 3) and orig == (600, 300)


def test_decode_drafts_landscape_jpegs_at_a_reduced_scale(monkeypatch):
    """A 4:3 photo twice the working size is decoded at half scale by libjpeg (no full-size decode), and the
    result is the working frame and close to a full decode resized."""
    from PIL import JpegImagePlugin
    scales = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        full = self.size
        result = draft(self, mode, size)
        scales.append(full[0] / self.size[0])
        return result
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    photo = Image.fromarray(scene(size=96)).resize((512, 384), Image.BICUBIC)
    image, orig = decode_image(jpeg_bytes(photo), 10**6, working_size=256)
    assert scales == [2] and image.shape == (192, 256, 3) and orig == (512, 384)
    reference = np.asarray(photo.resize((256, 192), Image.BICUBIC), np.float32)
    assert np.abs(image.astype(np.float32) - reference).mean() < 3
    decode_image(jpeg_bytes(photo), 10**6, working_size=300)   # 512 < 2 x 300: no draft
    assert scales[-1] == 1


def test_the_working_frame_resize_is_pillows_bicubic():
    """The resize runs on torch's uint8 kernel; its pixels are Pillow's antialiased bicubic ones within rounding."""
    from mining.sources.decode import resize_bicubic

    photo = np.asarray(Image.fromarray(scene(size=96)).resize((640, 480), Image.NEAREST))   # sharp edges
    for height, width in [(384, 512), (37, 50), (480, 320)]:
        ours = resize_bicubic(photo, height, width)
        pillow = np.asarray(Image.fromarray(photo).resize((width, height), Image.BICUBIC))
        assert ours.shape == pillow.shape and ours.dtype == np.uint8 and ours.flags.writeable
        difference = np.abs(ours.astype(int) - pillow.astype(int))
        assert difference.max() <= 2 and difference.mean() < 0.05, (height, width)


def test_decode_converts_modes_and_guards_bombs():
    buf = __import__("io").BytesIO()
    Image.new("LA", (20, 10)).save(buf, format="PNG")
    image, _ = decode_image(buf.getvalue(), 10**6, 64)
    assert image.shape == (10, 20, 3) and image.dtype == np.uint8
    with pytest.raises(OverflowError, match="max_image_pixels"):
        decode_image(jpeg_bytes(np.zeros((100, 100, 3), np.uint8)), max_pixels=9999, working_size=64)


def test_decoding_on_the_device_gives_the_hosts_frames_and_failures():
    """The GPU path (nvJPEG on CUDA; run here by torchvision on the CPU): the same working frames within a few
    levels (the host decodes at a reduced DCT scale first), EXIF turns, other formats and failures."""
    import io

    rng = np.random.default_rng(0)
    photo = np.clip(scene(size=320).repeat(4, 0).repeat(4, 1).astype(float) + rng.normal(0, 3, (1280, 1280, 3)),
                    0, 255).astype(np.uint8)[:960]
    exif = Image.Exif()
    exif[0x0112] = 6
    png = io.BytesIO()
    Image.fromarray(scene(size=64)).save(png, format="PNG")
    good = jpeg_bytes(photo)
    raws = [good, jpeg_bytes(photo[:400, :200], exif=exif), png.getvalue(), good[: len(good) // 3], b"not an image",
            jpeg_bytes(np.zeros((300, 300, 3), np.uint8))]
    device = decode_images_on_device(raws, 2_000_000, 512, "cpu")
    for raw, ours in zip(raws[:3], device[:3]):
        host = decode_image(raw, 2_000_000, 512)
        assert ours[1] == host[1] and ours[0].shape == host[0].shape and ours[0].dtype == np.uint8
        assert np.abs(ours[0].astype(int) - host[0].astype(int)).mean() < 2.0
    assert device[0][0].shape == (384, 512, 3) and device[1][0].shape == (200, 400, 3)   # the turned one
    assert isinstance(device[3], Exception) and isinstance(device[4], Exception)
    assert isinstance(decode_images_on_device(raws[5:], 10_000, 512, "cpu")[0], OverflowError)
    # the frame's size is the host's whatever the size: the host starts from Pillow's drafted (rounded-up) size
    sizes = [(int(w), int(h)) for w, h in rng.integers(300, 2800, (16, 2))] + [(2664, 2493), (2048, 1536)]
    raws = [jpeg_bytes(np.full((h, w, 3), 128, np.uint8)) for w, h in sizes]
    for raw, ours in zip(raws, decode_images_on_device(raws, 10**8, 1024, "cpu")):
        assert ours[0].shape == decode_image(raw, 10**8, 1024)[0].shape


def test_decode_stage_names_every_bad_case(tmp_path, tiny_cfg):
    good = jpeg_bytes(scene())
    shard = write_tar(tmp_path / "bad.tar", [
        ("ok.jpg", good), ("ok.txt", b"a red square on grass"),
        ("noimg.txt", b"a caption with no image"),
        ("zero.jpg", b""), ("zero.txt", b"a dog"),
        ("corrupt.jpg", good[: len(good) // 3]), ("corrupt.txt", b"a dog"),
        ("garbage.jpg", b"not an image"), ("garbage.txt", b"a dog"),
        ("nocap.jpg", good),
        ("emptycap.jpg", good), ("emptycap.txt", b"   \n"),
        ("latin1.jpg", good), ("latin1.txt", "caf\u00e9 table".encode("latin-1")),
        ("huge.jpg", jpeg_bytes(np.zeros((200, 200, 3), np.uint8))), ("huge.txt", b"a dog"),
    ])
    samples = read_shard(str(shard))
    DecodeStage.from_config(tiny_cfg(source={"max_image_pixels": 20000})).run(samples)
    reasons = {s.key: s.drop for s in samples}
    assert reasons == {"ok": None, "noimg": Drop.MISSING_IMAGE, "zero": Drop.EMPTY_IMAGE,
                       "corrupt": Drop.DECODE_ERROR, "garbage": Drop.DECODE_ERROR, "nocap": Drop.NO_CAPTION,
                       "emptycap": Drop.NO_CAPTION, "latin1": Drop.CAPTION_NOT_UTF8, "huge": Drop.IMAGE_TOO_LARGE}
    ok = samples[0]
    assert ok.image.shape == (96, 96, 3) and ok.captions == ["a red square on grass"] and ok.members == {}
