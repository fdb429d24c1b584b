"""MedQuAD: one XML file per document, under one folder per NIH website.

Each ``<QAPair>`` is a question and a whole answer passage, so the corpus is
the set of answers (chunked when long; title = the document's ``<Focus>``,
source = the document) and a question's gold passages are the chunks of its
own answer, which is also its reference answer.

Ids come from the file's place, ``"<folder>/<file stem>/<pid>"`` (e.g.
``2_GARD_QA/0000004/1``), because the documents' own ids repeat across and
inside folders. Identical answer texts stay separate passages.

Most files use ``<Document>/<QAPairs>/<QAPair>/<Question>/<Answer>``; four
NINDS files use ``<doc>/<qaPairs>/<pair>/<question>/<answer>`` and one CDC file
``<DiseaseFile>``: tags are matched without regard to case, and both spellings
of the pair and focus tags are read. Empty answers (5 in GARD) are skipped and
counted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from metarag.data.chunking import chunk_document
from metarag.data.io import read_text
from metarag.data.schema import Passage, QAExample, Task
from metarag.data.splits import make_splits
from metarag.errors import DataError

PAIR_TAGS = frozenset({"qapair", "pair"})
FOCUS_TAGS = frozenset({"focus", "doctitle-focus"})
SKIP_EMPTY_ANSWER = "empty answer"
SKIP_EMPTY_QUESTION = "empty question"


def load_medquad(
    path: Path,
    *,
    seed: int = 0,
    max_tokens: int = 150,
    overlap: int = 30,
    name: str = "medquad",
    domain: str = "consumer health (NIH websites)",
) -> Task:
    """Load every ``*.xml`` file in the sub-folders of ``path`` (or in ``path`` itself).

    Args:
        path: The MedQuAD folder.
        seed: Split seed; MedQuAD has no test set of its own, so train, dev
            and test are all cut from the pool.
        max_tokens, overlap: Chunking of answers.
        name, domain: Task labels.

    Raises:
        DataError: No XML file, malformed XML (with line and column), a pair
            without question or answer, or a repeated pid within one file.
    """
    path = Path(path)
    files = sorted(path.glob("*/*.xml")) + sorted(path.glob("*.xml"))
    if not files:
        raise DataError(path, None, "no *.xml files in the folder or its sub-folders: "
                        "point at the MedQuAD folder (it holds 1_CancerGov_QA, ...)")
    corpus: list[Passage] = []
    examples: list[QAExample] = []
    skipped: Counter[str] = Counter()
    for file in files:
        doc_key = file.relative_to(path).with_suffix("").as_posix()
        _read_document(file, doc_key, corpus, examples, skipped, max_tokens, overlap)
    if not corpus:
        raise DataError(path, None, "no non-empty answers: the corpus would be empty")
    train, dev, test = make_splits(examples, seed=seed)
    task = Task(name, domain, "en", corpus, train, dev, test, dict(skipped))
    return task.validate(source=path)


def _read_document(
    file: Path,
    doc_key: str,
    corpus: list[Passage],
    examples: list[QAExample],
    skipped: Counter[str],
    max_tokens: int,
    overlap: int,
) -> None:
    root = _parse(file)
    focus = next((_text(e) for e in root.iter() if e.tag.lower() in FOCUS_TAGS), "")
    pairs = [e for e in root.iter() if e.tag.lower() in PAIR_TAGS]
    seen: set[str] = set()
    for n, pair in enumerate(pairs, start=1):
        pid = pair.get("pid", str(n))
        where = f"<{pair.tag} pid={pid!r}> (pair {n} of {len(pairs)})"
        if pid in seen:
            raise DataError(file, where, "repeated pid: each pair in a file needs its own pid")
        seen.add(pid)
        question_el = _child(pair, "question", file, where)
        answer_el = _child(pair, "answer", file, where)
        question, answer = _text(question_el), _text(answer_el)
        if not answer:
            skipped[SKIP_EMPTY_ANSWER] += 1
            continue
        if not question:
            skipped[SKIP_EMPTY_QUESTION] += 1
            continue
        qa_id = f"{doc_key}/{pid}"
        passages = chunk_document(qa_id, answer, title=focus, source=doc_key,
                                  max_tokens=max_tokens, overlap=overlap)
        corpus.extend(passages)
        examples.append(QAExample(
            id=qa_id, question=question, answers=(answer,),
            gold_passage_ids=tuple(p.id for p in passages),
            metadata={"qtype": question_el.get("qtype", ""), "focus": focus,
                      "url": root.get("url", "")},
        ))


def _parse(file: Path) -> ET.Element:
    # read_text first so bad bytes are reported as an encoding problem, not as
    # an XML syntax error.
    text = read_text(file)
    try:
        return ET.fromstring(text)
    except ET.ParseError as err:
        line, column = err.position  # expat counts columns from 0
        reason = str(err).split(": line ")[0]
        raise DataError(file, f"line {line}, column {column + 1}",
                        f"malformed XML: {reason}; fix the file or remove it") from None


def _child(pair: ET.Element, tag: str, file: Path, where: str) -> ET.Element:
    for child in pair:
        if child.tag.lower() == tag:
            return child
    raise DataError(file, where, f"missing <{tag}> element")


def _text(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()
