"""Seeded, deterministic synthetic images for OCR and detector models, drawn with PIL.

Text is drawn with the DejaVu / STIX fonts that matplotlib ships (``matplotlib.get_data_path()``), so the
images are the same on every machine with the same matplotlib: no system font is used. Latin letters and
digits only (matplotlib ships no CJK font), so a Chinese recognizer is judged on Latin text and digits.

Images are uint8 RGB arrays, shape (H, W, 3). Every function takes a ``numpy.random.Generator``; the same
seed gives the same pixels.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
              "DejaVuSansMono.ttf", "STIXGeneral.ttf", "DejaVuSans-Oblique.ttf")
WORDS = ("the", "and", "total", "price", "date", "invoice", "number", "order", "street", "city", "phone",
         "email", "name", "amount", "tax", "paid", "cash", "card", "item", "qty", "store", "open", "close",
         "model", "serial", "batch", "weight", "net", "gross", "page", "line", "north", "south", "river",
         "green", "table", "coffee", "water", "ticket", "seat", "gate", "flight", "train", "Hello", "World",
         "Edge", "Linux", "Paris", "Berlin", "Monday", "Friday", "June", "April", "Station", "Market",
         "Room", "Floor", "Exit", "Main", "Road", "Park", "Hotel", "Bank", "Menu", "Sale", "Free", "Stop")


@lru_cache(maxsize=None)
def font_paths() -> tuple[Path, ...]:
    """The matplotlib-shipped .ttf files used for text (those present). Raises ImportError without matplotlib."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = tuple(root / f for f in FONT_FILES if (root / f).is_file())
    if not found:
        raise FileNotFoundError(f"no DejaVu font under {root}")
    return found


@lru_cache(maxsize=256)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def random_text(rng: np.random.Generator, max_chars: int = 24) -> str:
    """One to three tokens: words, capitalised words, numbers, prices, dates, codes; <= max_chars."""
    def token() -> str:
        kind = rng.integers(6)
        if kind <= 1:
            return str(rng.choice(WORDS))
        if kind == 2:
            return str(rng.choice(WORDS)).upper()
        if kind == 3:
            return str(rng.integers(0, 10 ** int(rng.integers(1, 7))))
        if kind == 4:
            return f"{rng.integers(0, 1000)}.{rng.integers(0, 100):02d}"
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
        return "".join(rng.choice(list(letters), 2)) + f"{rng.integers(0, 10000):04d}"
    text = token()
    for _ in range(int(rng.integers(0, 3))):
        nxt = f"{text} {token()}"
        if len(nxt) > max_chars:
            break
        text = nxt
    return text[:max_chars]


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, ink) with a luminance gap of at least ~90 levels."""
    while True:
        bg = rng.integers(0, 256, 3)
        ink = rng.integers(0, 256, 3)
        if abs(float(bg.mean()) - float(ink.mean())) > 90:
            return tuple(int(v) for v in bg), tuple(int(v) for v in ink)


def background(rng: np.random.Generator, h: int, w: int, colour: tuple[int, int, int]) -> Image.Image:
    """A solid, gradient or blotchy background around ``colour``, (w, h) RGB."""
    base = np.empty((h, w, 3), np.float32)
    base[:] = colour
    kind = rng.integers(3)
    if kind == 1:   # linear gradient, +-30 levels
        ramp = np.linspace(-1, 1, w if rng.integers(2) else h, dtype=np.float32) * rng.uniform(10, 30)
        base += ramp[None, :, None] if ramp.size == w else ramp[:, None, None]
    elif kind == 2:  # low-frequency blotches
        small = rng.normal(0, 18, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
        base += np.asarray(Image.fromarray(small[..., 0]).resize((w, h), Image.BILINEAR))[..., None]
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def degrade(rng: np.random.Generator, img: Image.Image) -> np.ndarray:
    """Blur (sometimes) and Gaussian pixel noise (sigma 0-8 levels); returns uint8 (H, W, 3)."""
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    arr = np.asarray(img, np.float32)
    arr = arr + rng.normal(0, rng.uniform(0, 8), arr.shape).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


def text_line(rng: np.random.Generator, text: str, height: int = 48) -> np.ndarray:
    """``text`` on one line, cropped with a small margin, ``height`` pixels tall: uint8 (height, W, 3)."""
    path = font_paths()[int(rng.integers(len(font_paths())))]
    size = int(height * rng.uniform(0.55, 0.75))
    font = _font(path, size)
    left, top, right, bottom = font.getbbox(text)
    pad_x = int(rng.integers(2, 10))
    w = right - left + 2 * pad_x
    bg, ink = _colours(rng)
    img = background(rng, height, w, bg)
    y = (height - (bottom - top)) // 2 - top + int(rng.integers(-2, 3))
    ImageDraw.Draw(img).text((pad_x - left, y), text, font=font, fill=ink)
    return degrade(rng, img)


def page(rng: np.random.Generator, size: int = 320, lines: tuple[int, int] = (3, 8)
         ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A ``size`` x ``size`` page with several text lines at random places and sizes.

    Returns (uint8 (size, size, 3), list of line boxes (x0, y0, x1, y1) in pixels); lines do not overlap.
    """
    bg, ink = _colours(rng)
    img = background(rng, size, size, bg)
    draw = ImageDraw.Draw(img)
    boxes: list[tuple[int, int, int, int]] = []
    y = int(rng.integers(4, 20))
    for _ in range(int(rng.integers(lines[0], lines[1] + 1))):
        font = _font(font_paths()[int(rng.integers(len(font_paths())))], int(rng.integers(12, 30)))
        text = random_text(rng, 22)
        left, top, right, bottom = font.getbbox(text)
        tw, th = right - left, bottom - top
        if y + th + 4 > size:
            break
        if tw >= size - 8:
            continue
        x = int(rng.integers(4, size - tw - 3))
        colour = ink if rng.random() < 0.8 else _colours(rng)[1]
        draw.text((x - left, y - top), text, font=font, fill=colour)
        boxes.append((x, y, x + tw, y + th))
        y += th + int(rng.integers(6, 30))
    return degrade(rng, img), boxes


SKIN = ((255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 31))


def face_scene(rng: np.random.Generator, size: int = 320) -> np.ndarray:
    """One to three cartoon heads and shoulders drawn from ellipses (skin-toned face, hair, eyes, brows,
    nose, mouth, neck, clothed shoulders) on a blotchy background: uint8 (size, size, 3)."""
    bg, _ = _colours(rng)
    img = background(rng, size, size, bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        fw = int(rng.integers(size // 10, size // 4))
        fh = int(fw * rng.uniform(1.2, 1.45))
        cx = int(rng.integers(fw // 2 + 2, size - fw // 2 - 2))
        cy = int(rng.integers(fh // 2 + 2, size - fh // 2 - 2))
        skin = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in SKIN[int(rng.integers(len(SKIN)))])
        hair = tuple(int(v) for v in rng.integers(0, 120, 3))
        cloth = tuple(int(v) for v in rng.integers(0, 256, 3))
        # shoulders and neck (clothed torso below the head)
        draw.ellipse((cx - fw * 1.3, cy + fh * 0.55, cx + fw * 1.3, cy + fh * 1.9), fill=cloth)
        draw.rectangle((cx - fw * 0.18, cy + fh * 0.3, cx + fw * 0.18, cy + fh * 0.7), fill=skin)
        # hair behind, face, hair fringe
        long_hair = rng.random() < 0.5
        draw.ellipse((cx - fw * 0.58, cy - fh * 0.62, cx + fw * 0.58, cy + (fh * 0.6 if long_hair else 0)), fill=hair)
        draw.ellipse((cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2), fill=skin)
        draw.chord((cx - fw * 0.52, cy - fh * 0.58, cx + fw * 0.52, cy - fh * 0.05), 180, 360, fill=hair)
        # eyes, pupils, brows
        ex, ey, er = fw * 0.2, cy - fh * 0.05, fw * 0.09
        for sx in (-1, 1):
            x = cx + sx * ex
            draw.ellipse((x - er * 1.4, ey - er * 0.8, x + er * 1.4, ey + er * 0.8), fill=(250, 250, 250))
            draw.ellipse((x - er * 0.6, ey - er * 0.6, x + er * 0.6, ey + er * 0.6), fill=(40, 30, 20))
            draw.line((x - er * 1.5, ey - er * 1.8, x + er * 1.5, ey - er * 2.0), fill=hair, width=max(1, fw // 25))
        # nose and mouth
        shade = tuple(max(0, c - 40) for c in skin)
        draw.line((cx, cy, cx - fw * 0.05, cy + fh * 0.12), fill=shade, width=max(1, fw // 30))
        draw.arc((cx - fw * 0.18, cy + fh * 0.08, cx + fw * 0.18, cy + fh * 0.3), 20, 160,
                 fill=(150, 40, 50), width=max(1, fw // 20))
    return degrade(rng, img)


CAPTCHA_CHARS = "abcdefghijkmnpqrstuvwxyz23456789"     # no look-alikes (l/1, o/0): the truth is unambiguous


def captcha(rng: np.random.Generator, width: int = 192, height: int = 64) -> tuple[np.ndarray, str]:
    """A text captcha as ddddocr reads them: 4-6 characters, each at its own size, offset and grey, over
    a light background with a few strike-through lines; (uint8 (height, width) greyscale, its text)."""
    text = "".join(rng.choice(list(CAPTCHA_CHARS), int(rng.integers(4, 7))))
    img = Image.new("L", (width, height), int(rng.integers(180, 256)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 5))):
        draw.line([tuple(int(v) for v in rng.integers(0, (width, height))) for _ in range(2)],
                  fill=int(rng.integers(60, 200)), width=int(rng.integers(1, 3)))
    font = _font(font_paths()[int(rng.integers(len(font_paths())))], int(rng.integers(30, 44)))
    x = int(rng.integers(4, 24))
    for ch in text:
        draw.text((x, int(rng.integers(2, 14))), ch, font=font, fill=int(rng.integers(0, 90)))
        x += int(font.getlength(ch)) + int(rng.integers(-2, 5))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(0.6))
    arr = np.asarray(img, np.float32) + rng.normal(0, 8, (height, width)).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8), text


def click_captcha(rng: np.random.Generator, size: int = 416) -> np.ndarray:
    """A click captcha (scattered characters over coloured blocks), letterboxed into ``size`` x ``size``
    as ddddocr's detector preprocesses (top-left, the rest grey 114): uint8 (size, size, 3)."""
    w, h = int(rng.integers(300, 420)), int(rng.integers(150, 260))
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(120, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 6))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        draw.rectangle([x0, y0, x0 + int(rng.integers(20, 80)), y0 + int(rng.integers(20, 60))],
                       fill=tuple(int(v) for v in rng.integers(100, 256, 3)))
    for _ in range(int(rng.integers(3, 6))):
        font = _font(font_paths()[int(rng.integers(len(font_paths())))], int(rng.integers(28, 48)))
        draw.text((int(rng.integers(0, w - 40)), int(rng.integers(0, h - 50))), str(rng.choice(list(CAPTCHA_CHARS.upper()))),
                  font=font, fill=tuple(int(v) for v in rng.integers(0, 110, 3)))
    r = min(size / h, size / w)
    resized = np.asarray(img.resize((int(w * r), int(h * r)), Image.BILINEAR))
    out = np.full((size, size, 3), 114, np.uint8)
    out[: resized.shape[0], : resized.shape[1]] = resized
    return out
