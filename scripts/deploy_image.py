"""The image's build inputs as Docker reads them: the Dockerfile's stages through
dockerfile-parse (instructions, ARG and ENV substitution, exec forms) and .dockerignore
patterns through pathspec, applied with Docker's own matching rules."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pathspec
from dockerfile_parse import DockerfileParser
from dockerfile_parse.parser import image_from
from dockerfile_parse.util import WordSplitter


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int
    words: list[str]  # the arguments, ARG and ENV substituted (exec form: the JSON array)
    env: dict[str, str]  # what this ENV line sets


@dataclass
class Stage:
    index: int
    base: str  # global ARGs substituted
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"stage {self.index}"


@dataclass
class StageState:
    """What a stage's container starts with (inherited through `FROM other-stage`)."""

    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    healthcheck: str | None = None
    entrypoint: list[str] | None = None
    exposed: list[str] = field(default_factory=list)


def exec_form(value: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, or None for the shell form."""
    try:
        array = json.loads(value)
    except ValueError:
        return None
    return array if isinstance(array, list) else None


def parse_stages(text: str) -> list[Stage]:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    bases = iter(parser.parent_images)
    stages: list[Stage] = []
    for ins, context in zip(parser.structure, parser.context_structure, strict=True):
        keyword, value, line = ins["instruction"], ins["value"], ins["startline"] + 1
        if keyword == "FROM":
            stages.append(Stage(len(stages), next(bases), image_from(value)[1], line))
        elif stages and keyword != "COMMENT":
            rest = re.sub(r"^(?:--\S+\s+)*", "", value)  # flags before an exec form
            flags, array = value[: len(value) - len(rest)], exec_form(rest)
            if array is not None:
                words = [*flags.split(), *array]
            else:
                words = WordSplitter(value, args=context.args, envs=context.envs).split()
            env = dict(context.line_envs) if keyword == "ENV" else {}
            stages[-1].instructions.append(Instruction(keyword, value, line, list(words), env))
    return stages


# pathspec's "gitignore" pattern class: GitIgnoreBasicPattern (pathspec >= 1.0).
GITIGNORE_PATTERN = pathspec.lookup_pattern("gitignore")


def dockerignore_patterns(text: str) -> list[pathspec.Pattern]:
    """Docker's patterns as pathspec ones. The "gitignore" class (GitIgnoreBasicPattern) is
    gitignore's wildmatch as documented: `*` and `?` stop at `/`, `**` spans folders, which
    is Go's filepath.Match plus `**` as Docker has it. (The other class, GitIgnoreSpecPattern,
    adds Git's own quirks for files in excluded folders, which Docker does not have.) Docker
    has no match-anywhere (`foo` is `/foo`) and cleans each pattern (`service/` is
    `service`), so every pattern is anchored and cleaned here; ``ignored`` does the rest."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        cleaned = str(PurePosixPath("/" + line.removeprefix("!").strip().lstrip("/")))
        patterns.append(GITIGNORE_PATTERN(("!" if negated else "") + cleaned))
    return patterns


def ignored(path: str, patterns: list[pathspec.Pattern]) -> bool:
    """Whether Docker leaves ``path`` out of the build context. As Docker's matcher does
    (moby/patternmatcher, MatchesOrParentMatches), a pattern applies when it matches the path
    or one of its parent folders, and the last that applies wins, `!` included: `*` then
    `!service/` sends service/cli.py. pathspec's PathSpec tests the path alone (`*` would
    not cover .venv/bin/python), so the parent walk is here."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for pattern in patterns:
        if any(pattern.match_file(prefix) is not None for prefix in prefixes):
            excluded = bool(pattern.include)
    return excluded
