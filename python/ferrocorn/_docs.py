"""Prints the settings reference generated from ferrocorn's settings table.

Regenerate the committed copy with::

    python -m ferrocorn._docs > docs/settings.md

tests/test_settings_doc.py fails when docs/settings.md is out of date.
"""

import sys

from ferrocorn._ferrocorn import settings_markdown


def main() -> None:
    sys.stdout.write(settings_markdown())


if __name__ == "__main__":
    main()
