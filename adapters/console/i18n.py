"""Simplified Chinese and English, per person. The catalogs are gettext `.po` files under
adapters/console/locale/zh/ (one per area of the console, merged at start); English is the
source language. Babel compiles them in memory, so no binary `.mo` is committed."""

from __future__ import annotations

import gettext
import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE = Path(__file__).with_name("locale")
LANGUAGES = ("zh", "en")
NAMES = {"zh": "中文", "en": "English"}


@cache
def translations(language: str) -> gettext.NullTranslations:
    if language != "zh":
        return gettext.NullTranslations()
    merged: gettext.NullTranslations | None = None
    for po in sorted((LOCALE / language).glob("*.po")):
        with po.open("rb") as f:
            catalog = read_po(f, locale="zh_Hans_CN")
        buffer = io.BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        current = gettext.GNUTranslations(buffer)
        if merged is None:
            merged = current
        else:
            merged.add_fallback(current)
    return merged or gettext.NullTranslations()


def catalog_ids(language: str = "zh") -> dict[str, str]:
    """Every msgid of the language's catalogs with its translation ('' when missing)."""
    ids: dict[str, str] = {}
    for po in sorted((LOCALE / language).glob("*.po")):
        with po.open("rb") as f:
            for message in read_po(f, locale="zh_Hans_CN"):
                if message.id and isinstance(message.id, str):
                    ids[message.id] = str(message.string or "")
    return ids
