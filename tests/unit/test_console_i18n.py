"""Every word the console shows in English has its Simplified Chinese: each `_("…")` in the
console's templates and Python has a translation in adapters/console/locale/zh/*.po, a
placeholder survives translation, and the catalogs load."""

from __future__ import annotations

import re
from pathlib import Path

from adapters.console.i18n import catalog_ids, translations
from adapters.console.refusals import REASONS, TECHNICAL
from hub.service.slareport import CLOCK_NAMES

CONSOLE = Path(__file__).resolve().parents[2] / "adapters" / "console"
# _("a" "b") in Python (implicit concatenation) and _("…") / _('…') in templates.
CALL = re.compile(r"""_\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+|'(?:[^'\\]|\\.)*'\s*)\)""")
PART = re.compile(r""""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'""")


def shown_words() -> dict[str, str]:
    found: dict[str, str] = {}
    files = [*CONSOLE.rglob("*.html"), *CONSOLE.rglob("*.py")]
    for path in files:
        for call in CALL.finditer(path.read_text(encoding="utf-8")):
            text = "".join(a or b for a, b in PART.findall(call.group(1)))
            found.setdefault(text.encode().decode("unicode_escape"), str(path.relative_to(CONSOLE)))
    return found


def test_every_shown_word_has_its_chinese() -> None:
    catalog = catalog_ids("zh")
    missing = {w: where for w, where in shown_words().items() if not catalog.get(w)}
    assert missing == {}, "translate these in adapters/console/locale/zh/<area>.po"


def test_every_refusal_explained_has_its_chinese() -> None:
    catalog = catalog_ids("zh")
    missing = [t for t in (*REASONS.values(), TECHNICAL) if not catalog.get(t)]
    assert missing == []


def test_every_clock_kind_has_its_chinese() -> None:
    catalog = catalog_ids("zh")
    assert [n for n, _doc in CLOCK_NAMES.values() if not catalog.get(n)] == []


def test_placeholders_survive_translation() -> None:
    for english, chinese in catalog_ids("zh").items():
        assert set(re.findall(r"\{\w+\}", english)) == set(re.findall(r"\{\w+\}", chinese)), english


def test_catalogs_load_and_english_is_the_source() -> None:
    assert translations("zh").gettext("Sign in") == "登录"
    assert translations("en").gettext("Sign in") == "Sign in"
