"""Caption text of the synthetic corpus: short and long captions from word lists, whitespace-mangled
("dirty") variants that clean back to the truth, blank values, and the five caption fields of a sample
(which one carries the caption depends on its kind: normal, fallback or none)."""

from __future__ import annotations

import random

#: Default caption field followed by the default fallback chain, in order.
CAPTION_FIELDS: tuple[str, ...] = (
    "short_caption",
    "long_caption",
    "short_caption2",
    "long_caption2",
    "original_prompt",
)


def clean_caption(text: str) -> str:
    """The converter's default caption cleaning: whitespace runs (incl. newlines) -> one space, ends trimmed."""
    return " ".join(text.split())


_SUBJECTS = (
    "a cat",
    "a fluffy orange cat",
    "an astronaut",
    "a red fox",
    "a lighthouse",
    "an old sailing ship",
    "a robot",
    "two children",
    "a samurai",
    "a dragon",
    "a bowl of ramen",
    "a vintage car",
    "a hummingbird",
    "an elderly man",
    "a woman in a yellow raincoat",
    "a castle",
    "a tiny mouse",
    "a koi fish",
    "a steaming cup of coffee",
    "a wizard",
    "a golden retriever",
    'a neon sign reading "OPEN"',
    "a piñata",
    "a plate of crème brûlée",
    "the Zürich skyline",
    "a naïve painting of a cow",
    "a café terrace",
    "an über-modern villa",
    "a 日本語 sign",
    "a street in 東京",
    "a bouquet 🌸",
    "a sleepy 🐱",
    "a rocket 🚀",
    "a sparkling crystal ✨",
    "Ünïcödé letters",
    "a caterpillar's house",
)
_ACTIONS = (
    "sitting on",
    "floating above",
    "walking through",
    "standing next to",
    "hiding behind",
    "reading a book in",
    "dancing in",
    "looking at",
    "flying over",
    "sleeping under",
    "painting",
    "exploring",
)
_PLACES = (
    "a misty forest",
    "a crowded market",
    "the surface of Mars",
    "a snowy mountain",
    "an underwater city",
    "a sunlit kitchen",
    "a rainy street at night",
    "a field of sunflowers",
    "a futuristic city",
    "a quiet library",
    "a desert oasis",
    "a cozy living room",
    "an ancient temple",
    "a frozen lake",
)
_STYLES = (
    "digital art",
    "oil painting",
    "watercolor",
    "photorealistic",
    "3D render",
    "pixel art",
    "anime style",
    "studio lighting",
    "cinematic, 35mm",
    "isometric illustration",
    "charcoal sketch",
    "low poly",
)
_LONG_SENTENCES = (
    "The image shows {s} {a} {p}.",
    "In the foreground, {s} is rendered in soft, muted tones.",
    "The background features {p}, slightly out of focus.",
    "Warm light falls from the left, casting long shadows across the scene.",
    "The overall mood is calm and a little mysterious.",
    "Small details, like scattered leaves and drops of water, add texture.",
    "The colour palette is dominated by blues, teals and a touch of orange.",
    "There is no visible text in the image.",
    "The composition follows the rule of thirds, with {s} placed off-centre.",
    "It looks like {st}, with crisp edges and smooth gradients.",
    'A sign in the corner reads "Bienvenue", written in a playful font.',
    "Everything is framed by {p}, giving a sense of depth.",
)

# Whitespace inserted between words in "dirty" caption variants; str.split() treats all of them as blanks.
_GAP_VARIANTS = ("\n", "\r\n", "\t", "  ", "   ", " \n ", "\n\n", "\xa0", "\u3000")
_EDGE_VARIANTS = (" ", "  ", "\n", "\t", " \n", "\r\n", "\xa0")
_BLANK_STRINGS = ("", " ", "  \n ", "\t", "\n\n", " \r\n ", "\xa0", "\u3000 ")


def _short_caption(rng: random.Random) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_ACTIONS), rng.choice(_PLACES)]
    if rng.random() < 0.6:
        parts[-1] += ","
        parts.append(rng.choice(_STYLES))
    return " ".join(parts)


def _long_caption(rng: random.Random) -> str:
    fill = {"s": rng.choice(_SUBJECTS), "a": rng.choice(_ACTIONS), "p": rng.choice(_PLACES), "st": rng.choice(_STYLES)}
    first = _LONG_SENTENCES[0].format(**fill)
    rest = rng.sample(_LONG_SENTENCES[1:], rng.randint(2, 6))
    return " ".join([first] + [s.format(**fill) for s in rest])


def _dirty(clean: str, rng: random.Random) -> str:
    """A whitespace-mangled version of ``clean`` with clean_caption(result) == clean; always differs."""
    words = clean.split(" ")
    out = [words[0]]
    changed = False
    for w in words[1:]:
        if rng.random() < 0.15:
            out.append(rng.choice(_GAP_VARIANTS))
            changed = True
        else:
            out.append(" ")
        out.append(w)
    text = "".join(out)
    if not changed or rng.random() < 0.5:
        text = rng.choice(_EDGE_VARIANTS) + text
    if rng.random() < 0.5:
        text = text + rng.choice(_EDGE_VARIANTS)
    return text


def _maybe_dirty(clean: str, rng: random.Random, p: float = 0.2) -> str:
    return _dirty(clean, rng) if rng.random() < p else clean


def _blank_str(rng: random.Random) -> str:
    return rng.choice(_BLANK_STRINGS)


def _blank_list(rng: random.Random) -> list[str]:
    return [_blank_str(rng) for _ in range(rng.randint(0, 3))]


def _caption_fields(kind: str, level: int, truth: str | None, rng: random.Random) -> dict[str, object]:
    """Build the five caption fields; ``MISSING`` entries are dropped by the caller.

    kind "normal": short_caption carries the truth.  kind "fallback": fields before CAPTION_FIELDS[level]
    are missing/blank, that field carries the truth.  kind "none": every caption field is missing/blank.
    """
    fields: dict[str, object] = {}
    for i, name in enumerate(CAPTION_FIELDS):
        is_list = name.endswith("2")
        if kind == "none" or (kind == "fallback" and i < level):
            # unusable: missing, empty or whitespace-only (lists: missing, [] or only blank strings)
            r = rng.random()
            if r < 0.3:
                fields[name] = _MISSING
            elif is_list:
                fields[name] = _blank_list(rng)
            else:
                fields[name] = "" if r < 0.55 else _blank_str(rng)
        elif (kind == "normal" and i == 0) or (kind == "fallback" and i == level):
            assert truth is not None
            if is_list:
                lst = _blank_list(rng)
                if not lst:
                    lst = [_blank_str(rng)]  # make sure readers really skip blank entries
                lst.append(_maybe_dirty(truth, rng, 0.3))
                if rng.random() < 0.5:
                    lst.append(_short_caption(rng))
                fields[name] = lst
            else:
                fields[name] = _maybe_dirty(truth, rng, 0.3 if kind == "fallback" else 0.15)
        else:
            # after the field that gives the caption: anything realistic (it must not be used)
            if name == "long_caption":
                fields[name] = _maybe_dirty(_long_caption(rng), rng, 0.3) if rng.random() < 0.97 else ""
            elif name == "short_caption":
                fields[name] = _short_caption(rng)
            elif name == "original_prompt":
                fields[name] = _maybe_dirty(_short_caption(rng), rng, 0.1) if rng.random() < 0.6 else _MISSING
            else:
                if rng.random() < 0.7:
                    gen = _short_caption if name == "short_caption2" else _long_caption
                    fields[name] = [_maybe_dirty(gen(rng), rng, 0.1) for _ in range(rng.randint(1, 2))]
                else:
                    fields[name] = _MISSING
    return fields


_MISSING = object()
