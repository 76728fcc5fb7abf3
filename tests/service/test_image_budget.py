"""Uploaded images: a pixel budget checked from the headers before anything is decoded, and
decoding on a thread pool, never the event loop (issue 15: 64 PNGs of 4096 x 4096 held a
worker's loop for 11 s)."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import threading

import pytest
from PIL import Image

from service import inputs
from service.catalog import TensorSpec
from service.errors import InvalidInput, PayloadTooLarge
from service.inputs import images_array, images_array_off_loop

MNIST = TensorSpec("pixels", "float32", (None, 28, 28, 1))


@functools.cache
def big_png_header() -> bytes:
    """A 4096 x 4096 PNG cut right after its header: it opens, but cannot be decoded."""
    buffer = io.BytesIO()
    Image.new("L", (4096, 4096)).save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[: data.index(b"IDAT") + 8]


def png(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


# (case, images, max_pixels, error, fragment): one row per probe
BUDGET = [
    ("64 PNGs of 4096x4096 (the issue's probe)", [big_png_header()] * 64, 64 << 20,
     PayloadTooLarge, "images[4]: the images up to this one hold 83886080 pixels, over the cap "
     "of 67108864 per request (SERVICE_MAX_PIXELS)"),
    ("over a small budget as base64", [{"b64": base64.b64encode(png((100, 100))).decode()}] * 2,
     15_000, PayloadTooLarge, "images[1]: the images up to this one hold 20000 pixels"),
    ("one side over the cap", [png((5000, 2))], 64 << 20, PayloadTooLarge,
     "images[0]: 5000x2 pixels exceed the cap of 4096 per side"),
    # Within the budget, the truncated file is decoded, and refused for what it is.
    ("within the budget, undecodable", [big_png_header()], 64 << 20, InvalidInput,
     "images[0]: not a decodable PNG or JPEG image"),
]  # fmt: skip


@pytest.mark.parametrize(
    "images, max_pixels, error, fragment", [b[1:] for b in BUDGET], ids=[b[0] for b in BUDGET]
)
def test_pixel_budget_is_checked_from_the_headers_first(images, max_pixels, error, fragment):
    # The budget rows fail before decoding: the headers-only files would otherwise be
    # InvalidInput ("not decodable") at images[0].
    with pytest.raises(error) as caught:
        images_array(images, MNIST, "images", 64, max_pixels=max_pixels)
    assert type(caught.value) is error
    assert fragment in caught.value.message


def test_pillow_guard_is_respected(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with pytest.raises(PayloadTooLarge, match="images\\[0\\]: 40x40 pixels exceed the cap of 1000"):
        images_array([png((40, 40))], MNIST, "images", 64)


def test_jpeg_and_png_within_budget_are_decoded():
    pixels = images_array([png((4000, 3000), "JPEG"), png((30, 30))], MNIST, "images", 64)
    assert pixels.shape == (2, 28, 28, 1)
    assert 0.2 < float(pixels.mean()) < 0.5  # the red square's luminance, both formats


def test_uploads_are_decoded_on_the_pool_and_arrays_on_the_loop(monkeypatch):
    threads: list[str] = []
    decode = inputs._decode

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return decode(*args, **kwargs)

    monkeypatch.setattr(inputs, "_decode", recording)

    async def main():
        loop_thread = threading.current_thread().name
        pixels = await images_array_off_loop([png((64, 64))], MNIST, "images", 64)
        arrays = await images_array_off_loop([[[0] * 28] * 28], MNIST, "images", 64)
        return loop_thread, pixels, arrays

    loop_thread, pixels, arrays = asyncio.run(main())
    assert pixels.shape == arrays.shape == (1, 28, 28, 1)
    assert threads and all(name.startswith("image-decode") for name in threads), threads
    assert loop_thread not in threads


def test_the_loop_keeps_running_while_images_decode():
    """While a request's large images decode, other coroutines of the loop get to run."""

    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        await images_array_off_loop([png((4096, 4096))] * 3, MNIST, "images", 64)
        done = True
        await task
        return ticks

    assert asyncio.run(main()) > 3  # on the loop itself the decode would allow about one
