"""Generate the docstring preference pairs the default reward model is trained on.

Real text: the docstrings of the Python standard library (modules, and their public
functions, classes and methods). Each documented object yields two pairs of different kinds:

- prompt: a question about the object ("What does json.dumps do in Python?", ...);
- chosen: the full answer, the object's name and signature followed by its docstring
  (long docstrings keep their leading paragraphs, up to ``MAX_CHARS``);
- rejected, one of three kinds (the way human and LLM-judge preferences usually go, the
  more complete and relevant answer wins):
  - ``truncated``: the same answer cut off mid-way at a word boundary;
  - ``off_topic``: the full answer about another object of similar length, so that only
    relevance, not length, tells the two apart;
  - ``terse``: only the first sentence of the docstring.

Held-out pairs (``split == "test"``, about 15%) are chosen by a hash of the object's name;
off-topic answers come from objects of the same split. The output is deterministic for a
given Python version and seed; it is committed to ``service/data/`` so that building the
model does not depend on the local Python's docstrings.

Usage: python -I scripts/make_docstring_pairs.py [--out service/data/docstring-pairs.jsonl.gz]
(``-I``: a clean interpreter; code that replaces stdlib objects, such as pytest's
``sys.unraisablehook``, changes the pairs.)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib
import inspect
import io
import json
import pkgutil
import random
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# Modules never imported: side effects on import, GUI/OS specific, or not documentation.
DENY = frozenset(
    "antigravity this idlelib test lib2to3 tkinter turtle turtledemo distutils ensurepip "
    "venv pydoc_data encodings msilib winreg winsound nt msvcrt curses readline pty tty "
    "crypt nis ossaudiodev spwd site sre_compile sre_constants sre_parse asynchat asyncore "
    "smtpd imp cgi cgitb".split()
)

PROMPTS = (
    "What does {name} do in Python?",
    "Explain the {kind} {name} from Python's {module} module.",
    "How does {name} work?",
    "Can you describe the Python {kind} {name}?",
    "I'm reading code that uses {name}. What is it for?",
    "What is {name} in the {module} module used for?",
    "Please document {name} for me.",
    "Tell me about {name} in the Python standard library.",
    "What should I know about the {kind} {name}?",
    "Give me an explanation of {name}.",
)
MODULE_PROMPTS = (
    "What is the Python {name} module for?",
    "Explain what the {name} module in the standard library provides.",
    "Describe Python's {name} module.",
    "When would I use the {name} module?",
)

MIN_CHARS = 150  # docstring length bounds, in characters (pairs stay within ~256 tokens)
MAX_CHARS = 900
TEST_PERCENT = 15
KINDS = ("truncated", "off_topic", "terse")
PAIRS_PER_DOC = 2
ABSOLUTE_PATH_DEFAULT = re.compile(r"=\s*['\"]/")


@dataclass(frozen=True)
class Doc:
    name: str  # e.g. "json.dumps"; builtins without their module name
    module: str
    kind: str  # module | function | class | method
    answer: str  # "name(signature)\n\ndocstring"
    docstring: str
    split: str


def _signature(obj: object) -> str:
    try:
        sig = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    # Reprs of default values may hold memory addresses or this machine's paths
    # (platform.architecture's default is sys.executable): neither is deterministic.
    # Any absolute-path default is dropped, so the rule itself does not depend on the machine.
    if "0x" in sig or " at " in sig or len(sig) > 80 or ABSOLUTE_PATH_DEFAULT.search(sig):
        return ""
    return sig


def _split(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") % 100 < TEST_PERCENT else "train"


def _leading_paragraphs(doc: str) -> str:
    """The docstring, or as many of its leading paragraphs as fit in MAX_CHARS."""
    if len(doc) <= MAX_CHARS:
        return doc
    kept = ""
    for paragraph in doc.split("\n\n"):
        candidate = f"{kept}\n\n{paragraph}" if kept else paragraph
        if len(candidate) > MAX_CHARS:
            break
        kept = candidate
    return kept


def _make_doc(module: str, qualname: str, kind: str, obj: object) -> Doc | None:
    raw = getattr(obj, "__doc__", None)
    if not isinstance(raw, str) or not raw.strip():
        return None
    doc = _leading_paragraphs(inspect.cleandoc(raw).strip())
    if len(doc) < MIN_CHARS or "0x" in doc:
        return None
    if kind == "module":
        name, head = module, f"The {module} module"
    else:
        name = qualname if module == "builtins" else f"{module}.{qualname}"
        head = f"{name}{_signature(obj)}"
    return Doc(name, module, kind, f"{head}\n\n{doc}", doc, _split(name))


def _import(name: str) -> ModuleType | None:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException:  # noqa: B036 - some modules raise SystemExit or worse on import
        return None


def module_names() -> list[str]:
    names: set[str] = set()
    for top in sorted(sys.stdlib_module_names):
        if top.startswith("_") or top in DENY:
            continue
        names.add(top)
        module = _import(top)
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, top + ".", onerror=lambda _name: None):
            parts = info.name.split(".")
            if any(p.startswith("_") or p in DENY or p in ("test", "tests") for p in parts):
                continue
            names.add(info.name)
    return sorted(names)


def collect_docs() -> list[Doc]:
    docs: list[Doc] = []
    seen: set[str] = set()

    def add(doc: Doc | None) -> None:
        if doc is not None and doc.docstring not in seen:
            seen.add(doc.docstring)
            docs.append(doc)

    for module_name in module_names():
        module = _import(module_name)
        if module is None:
            continue
        add(_make_doc(module_name, "", "module", module))
        namespace = vars(module)
        for attr in sorted(namespace):
            obj = namespace[attr]
            if attr.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if inspect.isclass(obj):
                add(_make_doc(module_name, attr, "class", obj))
                members = vars(obj)
                for method_name in sorted(members):
                    method = members[method_name]
                    if not method_name.startswith("_") and callable(method):
                        add(_make_doc(module_name, f"{attr}.{method_name}", "method", method))
            elif callable(obj):
                add(_make_doc(module_name, attr, "function", obj))
    return docs


def _first_sentence(text: str) -> str:
    paragraph = text.split("\n\n", 1)[0]
    match = re.search(r"(?<=[.!?])\s", paragraph)
    sentence = paragraph[: match.start()] if match else paragraph
    return " ".join(sentence.split())


def _truncate(text: str, rng: random.Random) -> str:
    cut = int(len(text) * rng.uniform(0.2, 0.55))
    space = text.rfind(" ", 0, cut)
    cut = space if space > len(text) // 8 else cut
    return text[:cut].rstrip()


def _rejected(doc: Doc, kind: str, pool: list[Doc], rng: random.Random) -> tuple[str, str]:
    if kind == "off_topic":
        similar = [
            d
            for d in pool
            if d.module != doc.module and 0.75 <= len(d.answer) / len(doc.answer) <= 1.33
        ]
        if similar:
            return kind, rng.choice(similar).answer
        kind = "truncated"
    if kind == "terse":
        sentence = _first_sentence(doc.docstring)
        if 10 <= len(sentence) <= len(doc.answer) // 2:
            return kind, sentence
        kind = "truncated"
    return "truncated", _truncate(doc.answer, rng)


def make_pairs(docs: list[Doc], seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    by_split = {s: [d for d in docs if d.split == s] for s in ("train", "test")}
    pairs: list[dict[str, str]] = []
    for doc in docs:
        templates = MODULE_PROMPTS if doc.kind == "module" else PROMPTS
        prompts = rng.sample(templates, PAIRS_PER_DOC)
        for wanted, template in zip(rng.sample(KINDS, PAIRS_PER_DOC), prompts, strict=True):
            kind, rejected = _rejected(doc, wanted, by_split[doc.split], rng)
            pairs.append(
                {
                    "id": doc.name,
                    "split": doc.split,
                    "kind": kind,
                    "prompt": template.format(name=doc.name, kind=doc.kind, module=doc.module),
                    "chosen": doc.answer,
                    "rejected": rejected,
                }
            )
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("service/data/docstring-pairs.jsonl.gz"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules (typing.io, ...) warn on access
        docs = collect_docs()
    pairs = make_pairs(docs, args.seed)
    buf = io.BytesIO()
    # mtime=0 and no file name in the gzip header: the same pairs give the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for pair in pairs:
            gz.write((json.dumps(pair, ensure_ascii=False, sort_keys=True) + "\n").encode())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(buf.getvalue())
    counts = {k: sum(p["kind"] == k for p in pairs) for k in KINDS}
    held_out = sum(p["split"] == "test" for p in pairs)
    print(
        f"{len(pairs)} pairs {counts}, {held_out} held out, from Python "
        f"{sys.version.split()[0]} -> {args.out} ({len(buf.getvalue())} bytes)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
