"""Regenerate the course's offline data files and their checksums.

Run from the repository root with the ``data`` extra installed::

    .venv/bin/pip install -e '.[data]'
    .venv/bin/python data/make_datasets.py

Nothing here runs at course time: notebooks read the committed files through ``helpers.data``,
which checks them against ``data/SHA256SUMS``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent

# Faker locale -> country label. The number of surnames per class is the number of distinct
# surnames Faker ships for that locale, so the imbalance is whatever those lists give (not tuned).
SURNAME_LOCALES: dict[str, str] = {
    "ga_IE": "Irish",
    "sk_SK": "Slovak",
    "it_IT": "Italian",
    "es_ES": "Spanish",
    "nl_NL": "Dutch",
    "en_US": "English",
    "de_DE": "German",
    "fr_FR": "French",
    "cs_CZ": "Czech",
    "hu_HU": "Hungarian",
    "pt_PT": "Portuguese",
    "da_DK": "Danish",
    "tr_TR": "Turkish",
    "ro_RO": "Romanian",
    "lt_LT": "Lithuanian",
}


def write_digits(path: Path) -> None:
    """scikit-learn's bundled 8x8 digits as CSV: 64 pixel columns (0-16) and a label column."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([f"p{i}" for i in range(64)] + ["label"])
        for row, label in zip(digits.data.astype(int), digits.target, strict=True):
            writer.writerow([*row.tolist(), int(label)])


def write_surnames(path: Path) -> None:
    """Distinct surnames per country from Faker's locale lists, sorted for a stable file."""
    rows: set[tuple[str, str]] = set()
    for locale, country in SURNAME_LOCALES.items():
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        names = provider.last_names
        for name in names.keys() if isinstance(names, dict) else names:
            name = name.strip()
            if name and "," not in name:
                rows.add((name, country))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["surname", "country"])
        writer.writerows(sorted(rows, key=lambda r: (r[1], r[0])))


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    files = {"digits.csv": write_digits, "surnames.csv": write_surnames}
    for name, writer in files.items():
        writer(DATA_DIR / name)
    sums = "".join(f"{sha256(DATA_DIR / name)}  {name}\n" for name in sorted(files))
    (DATA_DIR / "SHA256SUMS").write_text(sums)
    print(sums, end="")


if __name__ == "__main__":
    main()
