"""WordNet for NLTK's METEOR, found or built offline.

METEOR (`nltk.translate.meteor_score`) matches synonyms through WordNet, which
NLTK does not ship: it expects `<dir>/corpora/wordnet/` (or `wordnet.zip`) in a
folder on `nltk.data.path` (which starts with `$NLTK_DATA`). No NLTK download
server is reachable here, so when no such folder exists this module builds one
from the WordNet 3.0 database that Debian's `wordnet-base` package installs in
`/usr/share/wordnet` (the same Princeton files NLTK's own `wordnet.zip` holds).

Where things live:
    * Built layout: `$METARAG_NLTK_DATA` if set, else
      `${XDG_CACHE_HOME:-~/.cache}/metarag/nltk_data`; the WordNet files go to
      `<that>/corpora/wordnet/`. A user cache rather than the repository, so an
      installed metarag and every checkout share one copy.
    * Sources tried, in order: `$WNSEARCHDIR` (WordNet's own variable),
      `/usr/share/wordnet` (Debian, Ubuntu), `/usr/local/WordNet-3.0/dict`.

Debian leaves out two files NLTK needs; they are made here:
    * `lexnames`: the 45 lexicographer file names, a fixed WordNet 3.0 table
      (man page lexnames(5WN)), written from `_LEXNAMES` below.
    * `index.sense`: sense key -> synset, generated from the data and index
      files (format senseidx(5WN)). NLTK >= 3.10 reads it when the reader is
      constructed, not only in `lemma_from_key`, so the reader fails without it.

Open Multilingual WordNet (`omw-1.4`, `omw-2.0` in NLTK >= 3.10) is not needed:
NLTK loads it lazily for `lang != "eng"` only, and METEOR asks English synsets.

Set it up from a shell (`make setup` does this)::

    python -m metarag.evaluation.wordnet --install
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from metarag.errors import MetaRAGError

#: Files of the WordNet 3.0 database NLTK's reader opens (besides lexnames,
#: index.sense and cntlist.rev, handled apart).
_REQUIRED = tuple(
    f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")
) + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
#: Copied when present: sense counts (Lemma.count()) and verb example sentences.
_OPTIONAL = ("cntlist.rev", "cntlist", "sents.vrb", "sentidx.vrb", "verb.Framestext")

#: WordNet 3.0 lexicographer files in file-number order (lexnames(5WN)).
_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
    "noun.artifact", "noun.attribute", "noun.body", "noun.cognition",
    "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon",
    "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body",
    "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)
#: Syntactic category numbers in lexnames and sense keys (5 = adjective satellite).
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_SS_TYPE = {"n": 1, "v": 2, "a": 3, "r": 4, "s": 5}

_DEFAULT_SOURCES = (Path("/usr/share/wordnet"), Path("/usr/local/WordNet-3.0/dict"))

_HOW_TO_FIX = (
    "To fix: on Debian/Ubuntu run `apt-get install wordnet-base` (as root) and then "
    "`python -m metarag.evaluation.wordnet`, or `python -m metarag.evaluation.wordnet "
    "--install` as root to do both; or set NLTK_DATA to a folder holding corpora/wordnet "
    "(e.g. one made by `nltk.download('wordnet')` on a machine that is online)."
)


class WordNetUnavailableError(MetaRAGError, LookupError):
    """WordNet could be neither found for NLTK nor built from local files."""


def default_data_dir() -> Path:
    """Folder this module builds NLTK's layout in (not necessarily existing yet).

    `$METARAG_NLTK_DATA` if set, else `${XDG_CACHE_HOME:-~/.cache}/metarag/nltk_data`.
    """
    if os.environ.get("METARAG_NLTK_DATA"):
        return Path(os.environ["METARAG_NLTK_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "metarag" / "nltk_data"


def find_source(candidates: Iterable[Path] | None = None) -> Path | None:
    """First folder holding the WordNet 3.0 database files, or None.

    Args:
        candidates: Folders to try; default `$WNSEARCHDIR`, `/usr/share/wordnet`,
            `/usr/local/WordNet-3.0/dict`.
    """
    if candidates is None:
        env = os.environ.get("WNSEARCHDIR")
        candidates = ((Path(env),) if env else ()) + _DEFAULT_SOURCES
    for folder in candidates:
        if all((folder / name).is_file() for name in _REQUIRED):
            return folder
    return None


def ensure_wordnet(
    data_dir: Path | str | None = None, *, sources: Sequence[Path] | None = None
) -> Path:
    """Make WordNet loadable by `nltk.corpus.wordnet` and return where it is.

    Adds `data_dir` to `nltk.data.path` (a process-wide list), looks for
    `corpora/wordnet` on that path (so `$NLTK_DATA` and `~/nltk_data` come
    first), builds it into `data_dir` from local WordNet files if absent, and
    checks that NLTK's reader loads it and finds synsets for "dog".

    Args:
        data_dir: Where to build the layout; default `default_data_dir()`.
        sources: Folders with the WordNet database to build from; default see
            `find_source`.

    Returns:
        The `corpora/wordnet` folder (or `wordnet.zip`) NLTK reads.

    Raises:
        WordNetUnavailableError: Nothing found and nothing to build from, or
            what was found does not load; the message says how to fix it.
    """
    import nltk

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.append(str(data_dir))
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        source = find_source(sources)
        if source is None:
            tried = ", ".join(str(p) for p in (sources or _DEFAULT_SOURCES))
            raise WordNetUnavailableError(
                "METEOR needs WordNet, but NLTK finds no corpora/wordnet under "
                f"nltk.data.path ({', '.join(nltk.data.path)}) and no WordNet 3.0 "
                f"database to build it from was found in {tried}. {_HOW_TO_FIX}"
            ) from None
        build_wordnet(source, data_dir)
    return _check_reader()


def _check_reader() -> Path:
    """Load `nltk.corpus.wordnet`, check it knows "dog", return its folder."""
    from nltk.corpus import wordnet

    try:
        synsets = wordnet.synsets("dog")
        root = wordnet.root
    except Exception as err:  # any failure inside NLTK's reader means unusable data
        raise WordNetUnavailableError(
            f"NLTK found WordNet but cannot read it ({type(err).__name__}: {err}). "
            "If it is a layout built by metarag, delete "
            f"{default_data_dir() / 'corpora' / 'wordnet'} and run "
            f"`python -m metarag.evaluation.wordnet` to rebuild it. {_HOW_TO_FIX}"
        ) from err
    if not synsets:
        raise WordNetUnavailableError(
            f"WordNet at {root} loads but has no synsets for 'dog'; it is empty or "
            f"not WordNet 3.x. {_HOW_TO_FIX}"
        )
    # A FileSystemPathPointer has .path; a ZipFilePathPointer has .zipfile.
    zipfile = getattr(root, "zipfile", None)
    return Path(zipfile.filename) if zipfile is not None else Path(root.path)


def build_wordnet(source: Path | str, data_dir: Path | str) -> Path:
    """Build NLTK's `corpora/wordnet/` layout from a WordNet 3.0 database folder.

    Copies the data, index and exception files, and writes `lexnames` and
    `index.sense` when the source lacks them (Debian's does). Written to a
    temporary folder and renamed, so a concurrent build or an interrupted one
    never leaves a half-written layout; if another process finished first its
    copy is kept.

    Args:
        source: Folder with data.noun, index.noun, noun.exc, ... (e.g.
            /usr/share/wordnet).
        data_dir: NLTK data folder; the result is `<data_dir>/corpora/wordnet`.

    Returns:
        The `corpora/wordnet` folder.

    Raises:
        WordNetUnavailableError: A required file is missing from `source`.
    """
    source, data_dir = Path(source), Path(data_dir)
    missing = [name for name in _REQUIRED if not (source / name).is_file()]
    if missing:
        raise WordNetUnavailableError(
            f"{source} is not a WordNet 3.0 database folder: missing {', '.join(missing)}. "
            f"{_HOW_TO_FIX}"
        )
    target = data_dir / "corpora" / "wordnet"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in _REQUIRED + _OPTIONAL:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        if (source / "lexnames").is_file():
            shutil.copyfile(source / "lexnames", staging / "lexnames")
        else:
            _write_lexnames(staging / "lexnames")
        if (source / "index.sense").is_file():
            shutil.copyfile(source / "index.sense", staging / "index.sense")
        else:
            _write_index_sense(staging)
        (staging / "README.metarag").write_text(
            f"Built by metarag.evaluation.wordnet from {source}.\n"
            "lexnames and index.sense were generated when the source lacked them.\n"
            "WordNet 3.0 licence: https://wordnet.princeton.edu/license-and-commercial-use\n",
            encoding="utf-8",
        )
        try:
            staging.rename(target)
        except OSError:
            if not (target / "index.sense").is_file():  # not a finished concurrent build
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_lexnames(path: Path) -> None:
    # Format: "NN<TAB>name<TAB>category"; NLTK asserts the numbers are 0..44 in order.
    lines = (
        f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)
    )
    path.write_text("".join(lines), encoding="ascii")


def _data_lines(path: Path) -> Iterable[list[str]]:
    """Fields of each synset line of a data.* file (licence header lines start with spaces)."""
    with path.open(encoding="ascii") as fh:
        for line in fh:
            if not line.startswith(" "):
                yield line.split(" | ", 1)[0].split()


def _lemma(word: str) -> str:
    # Sense keys use lower case and drop data.adj's syntactic markers: able(p) -> able.
    return word.split("(", 1)[0].lower()


def _write_index_sense(folder: Path) -> None:
    """Write index.sense (senseidx(5WN)) from the data.*, index.* and cntlist.rev files.

    A line is "sense_key synset_offset sense_number tag_cnt", sorted by key, where
    sense_key = lemma%ss_type:lex_filenum:lex_id:head_word:head_id; head_word and
    head_id (the first word of the head synset) are set for adjective satellites only.
    """
    # sense_number: position of the synset among the lemma's synsets in index.<pos>.
    sense_number: dict[tuple[str, str, str], int] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with (folder / f"index.{pos}").open(encoding="ascii") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                fields = line.split()
                lemma, synset_cnt, p_cnt = fields[0], int(fields[2]), int(fields[3])
                # lemma pos synset_cnt p_cnt [ptr_symbol]*p_cnt sense_cnt tagsense_cnt offsets
                for number, offset in enumerate(fields[6 + p_cnt : 6 + p_cnt + synset_cnt], 1):
                    sense_number[(pos, lemma, offset)] = number

    tag_count: dict[str, str] = {}
    if (folder / "cntlist.rev").is_file():
        with (folder / "cntlist.rev").open(encoding="ascii") as fh:
            for line in fh:
                key, _, count = line.split()
                tag_count[key] = count

    # Per synset: offset, lex_filenum, ss_type, [(lemma, lex_id)], head-synset offset.
    synsets: list[tuple[str, str, str, str, list[tuple[str, int]], str | None]] = []
    first_word: dict[str, tuple[str, int]] = {}  # adjective offset -> (lemma, lex_id)
    for pos in ("noun", "verb", "adj", "adv"):
        for f in _data_lines(folder / f"data.{pos}"):
            offset, lex_filenum, ss_type, w_cnt = f[0], f[1], f[2], int(f[3], 16)
            words = [(_lemma(f[4 + 2 * i]), int(f[5 + 2 * i], 16)) for i in range(w_cnt)]
            p_start = 4 + 2 * w_cnt
            pointers = [f[p_start + 1 + 4 * i : p_start + 5 + 4 * i]
                        for i in range(int(f[p_start]))]
            # A satellite's head is the adjective its "&" (similar to) pointer names.
            head = next((p[1] for p in pointers if p[0] == "&" and p[2] == "a"), None)
            if pos == "adj":
                first_word[offset] = words[0]
            synsets.append((pos, offset, lex_filenum, ss_type, words, head))

    lines = []
    for pos, offset, lex_filenum, ss_type, words, head in synsets:
        head_word, head_id = "", ""
        if ss_type == "s":
            if head is None:
                raise WordNetUnavailableError(
                    f"{folder / 'data.adj'}: satellite synset {offset} has no '&' pointer "
                    "to its head adjective; the data file is damaged. Reinstall wordnet-base."
                )
            head_word, head_lex_id = first_word[head]
            head_id = f"{head_lex_id:02d}"
        for lemma, lex_id in words:
            key = f"{lemma}%{_SS_TYPE[ss_type]}:{lex_filenum}:{lex_id:02d}:{head_word}:{head_id}"
            number = sense_number.get((pos, lemma, offset), 0)
            lines.append(f"{key} {offset} {number} {tag_count.get(key, '0')}\n")
    # NLTK binary-searches this file with Python string comparison: sort the same way.
    lines.sort()
    (folder / "index.sense").write_text("".join(lines), encoding="ascii")


def _apt_install() -> None:
    """Install Debian's wordnet-base quietly (root only)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wordnet-base"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m metarag.evaluation.wordnet [--install] [--data-dir DIR]`."""
    parser = argparse.ArgumentParser(
        prog="python -m metarag.evaluation.wordnet",
        description="Find or build WordNet for NLTK's METEOR; print where it is.",
    )
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"where to build the layout (default {default_data_dir()})")
    parser.add_argument("--install", action="store_true",
                        help="apt-get install wordnet-base first when it is missing "
                             "(needs root and apt-get)")
    args = parser.parse_args(argv)
    try:
        path = ensure_wordnet(args.data_dir)
    except WordNetUnavailableError as err:
        can_install = shutil.which("apt-get") is not None and os.geteuid() == 0
        if not (args.install and can_install and find_source() is None):
            print(f"error: {err}", file=sys.stderr)
            return 1
        print("Installing Debian's wordnet-base for METEOR...", file=sys.stderr)
        _apt_install()
        try:
            path = ensure_wordnet(args.data_dir)
        except WordNetUnavailableError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    print(f"WordNet for NLTK: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
