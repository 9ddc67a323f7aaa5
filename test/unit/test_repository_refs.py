"""The repository carries its own design: nothing cites a document outside it, and every
citation of ``doc/`` points at a section that exists.

The design notes once lived in files that a clone of this repository does not contain (a
design plan, per-paper implementation notes, surveys), and code cited them as "spec 2.3".
Those notes are now the project's own pages under ``doc/`` (``doc/design.md``,
``doc/backends/<family>.md``), cited as ``doc/<page>.md §N`` or ``§N.M``. Two checks keep it
that way, over every tracked text file (code, configs, launch files, README, model card, tests,
benchmark records, ``doc/`` itself):

* no reference to anything outside the repository: a spec section, the old design or spec file
  names, an absolute path of the machine the project was written on, and no ``*.md`` path that
  does not exist in the repository (``doc/`` pages may name the papers they were written from,
  by title and authors, but not those files);
* every ``§`` citation resolves to a numbered heading of its page. A ``§`` belongs to the page
  named right before it (``doc/backends/ssma.md §2.5``), to the page of the ``§`` it is listed
  with (``doc/design.md §2.2, §2.5``), inside a ``doc/`` page to that page itself, and
  elsewhere to the last ``doc/`` page the file named before it; ``issue N §M`` refers to an
  issue, not a page, and is left alone.

This file spells the forbidden patterns out (in the scanners and in their examples), so it is
not scanned itself; the scanners are tested on made-up text at the end, so a pattern that stops
matching fails a test instead of passing silently.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
THIS_FILE = Path(__file__).resolve().relative_to(REPO).as_posix()

# What a clone of this repository cannot follow. Each entry: (what it is, pattern).
EXTERNAL: tuple[tuple[str, re.Pattern[str]], ...] = (
    ('a numbered spec section', re.compile(r'\bspecs?\s+(?:section\s+|§\s*)?\d', re.IGNORECASE)),
    ('the spec files', re.compile(r'\bspecs/', re.IGNORECASE)),
    ('the old design plan', re.compile(r'\bDESIGN\.md\b')),
    (
        'an external spec file',
        re.compile(
            r'\b(?:ssma_adapnetpp|nanet_ann|rfbnet_depth_gating|environment_notes|'
            r'style_references|landscape_rgbd_models|landscape_ros)\b',
            re.IGNORECASE,
        ),
    ),
    ('the survey', re.compile(r'\blandscape\s+spec', re.IGNORECASE)),
    (
        '"the spec" as a source',
        re.compile(r"\b(?:the|a|per|of|from|see|nor)\s+spec(?:'s)?(?![\w.(\[])", re.IGNORECASE),
    ),
    ('a spec marker', re.compile(r'(?<![\w\]])\[D\]')),
    ('a folder outside the repository', re.compile(r'\.\./shared\b|(?<![\w.])/work/')),
)
MD_PATH = re.compile(r'(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.md)\b')
SECTION = re.compile(r'§\s*(\d+(?:\.\d+)*)')
PAGE_BEFORE = re.compile(r'(doc/[\w/-]+\.md)`?\s*$')
ISSUE_BEFORE = re.compile(r'\bissue\s+\d+\s*$', re.IGNORECASE)
LIST_SEPARATOR = re.compile(r'^[`\s,;/()\u2013-]*(?:and\s+|or\s+)?[`\s]*$')
DOC_PAGE = re.compile(r'doc/[\w/-]+\.md')
HEADING = re.compile(r'^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s', re.MULTILINE)


def tracked_files() -> list[str]:
    """Paths (relative, posix) of the repository's files: git's list in a checkout, else a
    walk that leaves out what git would ignore here (environments, build and output folders)."""
    if (REPO / '.git').exists():
        out = subprocess.run(
            ['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout
        return sorted(p for p in out.split('\0') if p)
    skip = {'.git', '.venv', 'build', 'install', 'log', 'out', '__pycache__', '.pytest_cache'}
    return sorted(
        p.relative_to(REPO).as_posix()
        for p in REPO.rglob('*')
        if p.is_file() and not skip & set(p.relative_to(REPO).parts)
    )


def read_text(rel: str) -> str | None:
    """The file as text, or None for binary files (weights, images)."""
    data = (REPO / rel).read_bytes()
    if b'\0' in data:
        return None
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        return None


def text_files() -> Iterator[tuple[str, str]]:
    for rel in tracked_files():
        if rel == THIS_FILE or not (REPO / rel).is_file():
            continue
        text = read_text(rel)
        if text is not None:
            yield rel, text


def _line(text: str, pos: int) -> tuple[int, str]:
    start = text.rfind('\n', 0, pos) + 1
    end = text.find('\n', pos)
    return text.count('\n', 0, pos) + 1, text[start : end if end >= 0 else len(text)].strip()


def external_references(rel: str, text: str, exists: set[str]) -> list[str]:
    """``path:line: what: the line`` for every reference to something outside the repo."""
    found = []
    for what, pattern in EXTERNAL:
        for match in pattern.finditer(text):
            line, content = _line(text, match.start())
            found.append(f'{rel}:{line}: {what}: {content}')
    here = Path(rel).parent
    for match in MD_PATH.finditer(text):
        target = match.group(1)
        candidates = {target, (here / target).as_posix()}
        if not candidates & exists:
            line, content = _line(text, match.start())
            found.append(f'{rel}:{line}: {target} is not a file of the repository: {content}')
    return found


def citations(rel: str, text: str) -> Iterator[tuple[str, str, int]]:
    """``(page, section, position)`` for every ``§`` citation of a doc page in ``text``."""
    previous_end, previous_page = -1, None
    for match in SECTION.finditer(text):
        before = text[: match.start()]
        page: str | None
        if named := PAGE_BEFORE.search(before):
            page = named.group(1)
        elif ISSUE_BEFORE.search(before):
            previous_end, previous_page = match.end(), None
            continue
        elif previous_page and LIST_SEPARATOR.match(text[previous_end : match.start()]):
            page = previous_page
        elif rel.startswith('doc/') and rel.endswith('.md'):
            page = rel
        else:
            pages = DOC_PAGE.findall(before)
            page = pages[-1] if pages else None
        yield page or '', match.group(1), match.start()
        previous_end, previous_page = match.end(), page


def headings(page_text: str) -> set[str]:
    return set(HEADING.findall(page_text))


def unresolved_citations(rel: str, text: str, pages: dict[str, set[str]]) -> list[str]:
    found = []
    for page, section, pos in citations(rel, text):
        line, content = _line(text, pos)
        if not page:
            found.append(f'{rel}:{line}: §{section} names no doc page before it: {content}')
        elif page not in pages:
            found.append(f'{rel}:{line}: {page} does not exist: {content}')
        elif section not in pages[page]:
            found.append(f'{rel}:{line}: {page} has no section {section}: {content}')
    return found


def doc_pages() -> dict[str, set[str]]:
    return {
        p.relative_to(REPO).as_posix(): headings(p.read_text(encoding='utf-8'))
        for p in sorted((REPO / 'doc').rglob('*.md'))
    }


# ---- the repository ----------------------------------------------------------------------------


def test_nothing_refers_outside_the_repository() -> None:
    files = dict(text_files())
    assert 'README.md' in files and 'rgbd_seg_ros/ros/segmentation_node.py' in files
    exists = set(tracked_files())
    found = [
        line for rel, text in files.items() for line in external_references(rel, text, exists)
    ]
    assert not found, 'references to documents outside the repository:\n' + '\n'.join(found)


def test_every_doc_citation_resolves_to_a_numbered_heading() -> None:
    pages = doc_pages()
    assert {'doc/design.md', 'doc/backends/ssma.md'} <= set(pages)
    found = [line for rel, text in text_files() for line in unresolved_citations(rel, text, pages)]
    assert not found, 'citations without a section to go to:\n' + '\n'.join(found)


def test_the_code_cites_the_design() -> None:
    """The citations are there to be checked: code, configs and the README cite doc/."""
    cited = {rel for rel, text in text_files() if any(citations(rel, text))}
    for rel in ('README.md', 'rgbd_seg_ros/ros/segmentation_node.py', 'config/train/ssma.yaml'):
        assert rel in cited


# ---- the scanners on made-up text --------------------------------------------------------------


@pytest.mark.parametrize(
    'bad',
    [
        'see spec 9.1 for the rates',
        '(spec section 6.4)',
        '# specs/ssma_adapnetpp.md 5.1',
        'the layers (DESIGN.md)',
        "the spec's proposal",
        "per the spec's count",
        'proposal [D])',
        'read ../shared/papers',
        'open /work/shared/specs/x',
        'nanet_ann.md section 1',
        'landscape spec 3c',
        'see doc/missing.md',
    ],
)
def test_external_reference_patterns_catch(bad: str) -> None:
    assert external_references('x.py', bad, {'README.md'})


@pytest.mark.parametrize(
    'fine',
    [
        "normalised with the input spec's mean",
        "the checkpoint's input spec",
        'spec = BY_NAME.get(name)',
        'for spec in node_params.PARAMS',
        'spec.depth_encoding',
        'ParamSpec, InputSpec',
        'list[D]',
        'see README.md and doc/design.md',
        'it specifies the rates',
    ],
)
def test_external_reference_patterns_spare(fine: str) -> None:
    assert not external_references('x.py', fine, {'README.md', 'doc/design.md'})


def test_markdown_links_resolve_relative_to_their_page() -> None:
    exists = {'doc/design.md', 'doc/backends/ssma.md'}
    assert not external_references('doc/README.md', '[ssma](backends/ssma.md)', exists)
    assert not external_references('doc/backends/nanet.md', 'see `ssma.md`', exists)
    assert external_references('doc/backends/nanet.md', 'see `landscape.md`', exists)


def test_citation_resolution() -> None:
    pages = {'doc/design.md': {'1', '2', '2.2', '2.5'}, 'doc/backends/ssma.md': {'5', '5.5'}}
    ok = (
        'doc/design.md §2.2, §2.5 and §1; `doc/backends/ssma.md §5.5` (§5); '
        'issue 16 §9; doc/design.md §2 then later §2.5'
    )
    assert not unresolved_citations('x.py', ok, pages)
    assert [p for p, _, _ in citations('x.py', 'doc/design.md §1, doc/backends/ssma.md §5')] == [
        'doc/design.md',
        'doc/backends/ssma.md',
    ]
    assert unresolved_citations('x.py', 'doc/design.md §2.9', pages)
    assert unresolved_citations('x.py', 'doc/design.md §2.2, §5.5', pages)
    assert unresolved_citations('x.py', 'doc/other.md §1', pages)
    assert unresolved_citations('x.py', 'a bare §1', pages)
    # Inside a doc page a bare § is that page's own section.
    assert not unresolved_citations('doc/design.md', 'as in §2.5', pages)
    assert unresolved_citations('doc/backends/ssma.md', 'as in §2.5', pages)


def test_headings_are_read_with_their_numbers() -> None:
    page = '# Title\n\n## 1. Layers\n\n### 1.1 Order\n\ntext 2.3 here\n#### 4.2.1 Deep\n'
    assert headings(page) == {'1', '1.1', '4.2.1'}
