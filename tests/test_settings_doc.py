"""docs/settings.md is generated from the settings table and must be kept current."""

from pathlib import Path

from ferrocorn._ferrocorn import settings_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_settings_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == settings_markdown(), (
        "docs/settings.md is stale: run `python -m ferrocorn._docs > docs/settings.md`"
    )
