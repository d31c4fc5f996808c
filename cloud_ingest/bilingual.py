"""Bilingual headings shared by the files people open in Excel: the record's CSV and the declared-figures template."""


def header(key: str, zh: str) -> str:
    """A CSV column heading: Chinese label, then the stable English key (the last word)."""
    return f"{zh} {key}"
