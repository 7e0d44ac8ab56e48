"""Decoding raw tar members: the RGB image in the working frame, and the captions to use (the decode stage,
`mining.stages.decode`, applies them)."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image, ImageOps


# We apply our own pixel limit before decoding; Pillow's own guard would raise on the same images
# with a less useful message, and warn on ones our limit allows.
Image.MAX_IMAGE_PIXELS = None


def _text(raw: bytes) -> str | None:
    """UTF-8 text, or None when the bytes are not UTF-8 (a BOM is tolerated)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _json_captions(raw: bytes, fields: list[str]) -> tuple[list[str], bool]:
    text = _text(raw)
    if text is None:
        return [], True
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        return [], False
    found: list[str] = []
    if isinstance(meta, dict):
        for name in fields:
            value = meta.get(name)
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, list):
                found.extend(v for v in value if isinstance(v, str))
    return found, False


def extract_captions(members: dict[str, bytes], fields: list[str], limit: int) -> tuple[list[str], bool]:
    """The first `limit` distinct non-empty captions: {key}.txt first, then the {key}.json fields in order.
    Also says whether some caption was unreadable as UTF-8, to name the drop reason right."""
    candidates: list[str] = []
    bad_utf8 = False
    if "txt" in members:
        text = _text(members["txt"])
        if text is None:
            bad_utf8 = True
        else:
            candidates.append(text)
    if "json" in members:
        found, bad = _json_captions(members["json"], fields)
        candidates.extend(found)
        bad_utf8 = bad_utf8 or bad
    captions: list[str] = []
    for caption in candidates:
        caption = " ".join(caption.split())
        if caption and caption not in captions:
            captions.append(caption)
    return captions[:limit], bad_utf8


def decode_image(raw: bytes, max_pixels: int, working_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8[H, W, 3] with EXIF orientation applied and the longest side at most `working_size`.
    Raises ValueError('too large') before decoding pixels when the stored size exceeds `max_pixels`."""
    with Image.open(io.BytesIO(raw)) as im:
        if im.width * im.height > max_pixels:
            raise OverflowError(f"{im.width}x{im.height} exceeds source.max_image_pixels={max_pixels}")
        # EXIF orientations 5-8 turn the picture a quarter: width and height swap on display
        orientation = im.getexif().get(0x0112, 1)
        turned = orientation in (5, 6, 7, 8)
        orig = (im.height, im.width) if turned else (im.width, im.height)
        _draft(im, working_size)
        if orientation != 1:   # exif_transpose copies the image even when there is nothing to turn
            im = ImageOps.exif_transpose(im)
        if im.mode != "RGB":   # and so does convert
            im = im.convert("RGB")
        pixels = np.asarray(im, dtype=np.uint8)
    if max(pixels.shape[:2]) > working_size:
        return resize_bicubic(pixels, *frame_size(*pixels.shape[:2], working_size)), orig
    return pixels.copy(), orig   # Pillow's array is read-only


def _draft(im: Image.Image, working_size: int) -> None:
    """Have a JPEG decoded at 1/2, 1/4 or 1/8 scale directly, far cheaper for big photos (other formats ignore
    it). Pillow picks the largest reduction that keeps both sides >= the size asked for, so ask for the final size
    itself: asking (working_size, working_size) would rule it out for every landscape or portrait image. Only the
    decoder's scale is set, no pixel is read; `im.size` becomes the size the decode will have."""
    target = working_size / max(im.width, im.height)
    im.draft("RGB", (max(1, round(im.width * target)), max(1, round(im.height * target))))


def frame_size(height: int, width: int, working_size: int) -> tuple[int, int]:
    """(height, width) of the working frame of a height x width picture: the longest side cut to `working_size`."""
    scale = working_size / max(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def decode_or_error(raw: bytes, max_pixels: int, working_size: int) -> tuple[np.ndarray, tuple[int, int]] | Exception:
    """`decode_image`, or the exception it raised (its type names the drop reason)."""
    try:
        return decode_image(raw, max_pixels, working_size)
    except Exception as exn:  # noqa: BLE001 - PIL raises many types for corrupt data
        return exn


def resize_bicubic(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8[H, W, 3] resized with an antialiased bicubic filter, as Pillow's BICUBIC resize (within 2 levels,
    0.005 on average) but through torch's vectorised uint8 kernel: 3.4 instead of 17 ms for 1280x960 -> 1024
    on one core, the largest share of decoding a photo."""
    import torch   # imported where an image needs resizing: small images never pay for it

    channels_last = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0)   # a writable copy
    resized = torch.nn.functional.interpolate(channels_last, size=(height, width), mode="bicubic", antialias=True)
    return np.ascontiguousarray(resized[0].permute(1, 2, 0).numpy())


def decode_images_on_device(raws: list[bytes], max_pixels: int, working_size: int,
                            device) -> list[tuple[np.ndarray, tuple[int, int]] | Exception]:
    """`decode_image` of each of `raws`, with the JPEGs decoded in one batch by `device` (nvJPEG through
    torchvision on CUDA) and resized there, so only compressed bytes go to the device and the working frame comes
    back: the host reads headers only. Other formats, and a batch the device decoder refuses, are decoded on the
    host. A failure is returned in the image's place, as `decode_image` would raise it."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    results: list = [None] * len(raws)
    jpegs: list[tuple[int, tuple[int, int], tuple[int, int]]] = []
    for i, raw in enumerate(raws):
        try:
            with Image.open(io.BytesIO(raw)) as im:   # the header: size, format, orientation
                if im.width * im.height > max_pixels:
                    raise OverflowError(f"{im.width}x{im.height} exceeds source.max_image_pixels={max_pixels}")
                # nvJPEG does not apply EXIF orientation: a turned photo, like a cut-off JPEG (no end-of-image
                # marker, refused on the host rather than half-decoded) or another format, decodes on the host
                upright = im.getexif().get(0x0112, 1) == 1
                on_device = (im.format == "JPEG" and im.mode in ("RGB", "L") and upright
                             and raw.rstrip(b"\0").endswith(b"\xff\xd9"))
                orig = (im.width, im.height)
                if on_device:   # the size the host's drafted decode would resize from, so the frames match
                    _draft(im, working_size)
                    jpegs.append((i, orig, frame_size(im.height, im.width, working_size)))
            if not on_device:
                results[i] = decode_or_error(raw, max_pixels, working_size)
        except Exception as exn:  # noqa: BLE001 - a header Pillow cannot read: the caller names the drop reason
            results[i] = exn
    if not jpegs:
        return results
    data = [torch.frombuffer(bytearray(raws[i]), dtype=torch.uint8) for i, _, _ in jpegs]
    try:
        decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:   # one corrupt JPEG fails the batch: each is decoded on the host and judged there
        decoded = [None] * len(jpegs)
    for (i, orig, frame), image in zip(jpegs, decoded):
        results[i] = decode_or_error(raws[i], max_pixels, working_size) if image is None \
            else (_to_frame(image, frame), orig)
    return results


def _to_frame(image, frame: tuple[int, int]) -> np.ndarray:
    """uint8[H, W, 3] on the host of a uint8[3, h, w] device tensor resized to `frame` (antialiased bicubic, as
    `resize_bicubic`)."""
    import torch

    if tuple(image.shape[1:]) != frame:
        image = torch.nn.functional.interpolate(image[None].float(), size=frame, mode="bicubic", antialias=True)[0]
        image = image.round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
