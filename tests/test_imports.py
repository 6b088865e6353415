"""Imports run one way: the floor plan of the packages, and the tests that read every import to keep it so.

`PACKAGES` is the floor plan: each installed package, its folder, what it owns and the packages of this project it
may import. A package's floor is one above the highest floor it may import, so imports can only run downward. The
tests parse every module of every package with `ast` and check each import wherever it stands (at the top, inside a
function, under `if __name__ == "__main__":`) against the plan, then look for circles, of packages and of files.
An import of `a.b` counts as an edge to the module `a.b` (its package's `__init__` runs first, but a package that
re-exports its own modules is no circle). The picture in docs/architecture.md is drawn from the same data by
`floor_plan()`: `test_the_docs_draw_this_floor_plan` compares the two, and `python -m tests.test_imports` redraws the
picture after a change here.
"""

import ast
import functools
import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE_PAGE = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Package:
    name: str  # the import name
    folder: str  # its folder in the repository (pyproject.toml's package-dir)
    owns: str  # what it holds, for the picture in docs/architecture.md
    imports: tuple[str, ...] = ()  # the packages of this project it may import


# The floor plan (docs/architecture.md).
PACKAGES = (
    Package(
        "modeling_myna",
        "modeling_myna",
        "the model: configuration, models, feature extractor and mel front end, masking policies, data collator, "
        "audio I/O, model card; the converter of the released checkpoints",
    ),
    Package(
        "myna_common",
        "common",
        "what every command and test shares: the command-line helpers (argument parsing, one-line errors, "
        "did-you-mean, device checks), atomic file writes and the generated music corpus",
    ),
    Package(
        "myna_evaluation",
        "evaluation",
        "downstream evaluation (probe.py, export.py): the tasks, cached embedding extraction, the probe grid, "
        "metrics, the report",
        ("modeling_myna", "myna_common"),
    ),
    Package(
        "myna_pipelines",
        "pipelines",
        "everyday use: the music-embedding and audio-classification pipelines, streaming audio, the `myna` "
        "command, the embedding store and search",
        ("modeling_myna", "myna_common"),
    ),
    Package(
        "myna_training",
        "training",
        "pre-training (pretrain.py, its stages) with its arguments, data, store, checkpoints, losses and the one "
        "export; fine-tuning (finetune.py), which scores with evaluation's tasks; the ablation runner (ablate.py "
        "and ablation/), which probes with evaluation's probe",
        ("modeling_myna", "myna_common", "myna_evaluation"),
    ),
)

# The one import that runs upward: (importing module, imported module). `import modeling_myna` registers the
# "music-embedding" task with `transformers.pipeline` for its users, and the task's class lives in myna_pipelines:
# the last lines of modeling_myna/__init__.py import it, guarded, so that an install without myna_pipelines (or a
# trust_remote_code copy of a model folder, which has no `__init__`) goes without. It stays an import rather than a
# lazy registration because transformers' public `PIPELINE_REGISTRY.register_pipeline` takes the class itself; a
# lazy entry would be a dotted path written into the registry's private table (which only recent transformers 5
# releases resolve), and it would hide this dependency from this test instead of removing it.
REGISTRATION_HOOK = ("modeling_myna", "myna_pipelines.music_embedding")

# Code under `if __name__ == "__main__":` runs only when its file is the program, never on import: no importer of
# the module depends on it. Like every script it may use the shared command-line floor; the converter, run as
# `python -m modeling_myna.convert_original_checkpoint`, takes its "did you mean" and one-line errors from there.
PROGRAMS_MAY_IMPORT = ("myna_common",)

FLOOR_PLAN_MARKER = (
    "<!-- floor plan: drawn from PACKAGES in tests/test_imports.py; python -m tests.test_imports redraws it -->"
)


# ------------------------------------------------------------------------------------------------ reading imports


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the repository
    line: int
    module: str  # the importing module, e.g. `myna_training.finetune`
    target: str  # the imported module of this project, e.g. `myna_evaluation.tasks`
    program: bool  # under `if __name__ == "__main__":`

    @property
    def package(self) -> str:
        return self.module.split(".")[0]

    @property
    def target_package(self) -> str:
        return self.target.split(".")[0]

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the packages under `root`: `{dotted name: file}` (a package is its `__init__.py`)."""
    found = {}
    for package in PACKAGES:
        folder = root / package.folder
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            found[".".join((package.name, *parts[: -1 if parts[-1] == "__init__" else None]))] = path
    return found


def _is_main_block(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":`"""
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def imports(root: Path = ROOT) -> list[Import]:
    """Every import of a module of this project by a module of the packages under `root`, wherever it stands."""
    known = modules(root)
    names = {package.name for package in PACKAGES}

    def deepest(name: str) -> str:  # `import a.b.c` loads a.b.c; the longest prefix that is a module
        parts = name.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known), name)

    found = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        program = {id(node) for block in tree.body if _is_main_block(block) for node in ast.walk(block)}
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package, `level - 1` packages up
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                # `from a import b` loads the module a.b when there is one, else a
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                if target.split(".")[0] in names:
                    relative = path.relative_to(root).as_posix()
                    found.append(Import(relative, node.lineno, module, deepest(target), id(node) in program))
    return found


# ---------------------------------------------------------------------------------------------------- the rules


def floors() -> dict[str, int]:
    """`{package: floor}`: 0 for a package that imports none of the others, else one above the highest it imports."""
    plan = {package.name: package for package in PACKAGES}
    floor = {}

    def of(name: str, path: tuple[str, ...]) -> int:
        if name in path:
            raise ValueError(f"the floor plan has a circle: {' -> '.join((*path, name))}")
        if name not in floor:
            floor[name] = 1 + max((of(lower, (*path, name)) for lower in plan[name].imports), default=-1)
        return floor[name]

    for name in plan:
        of(name, ())
    return floor


def is_exempt(imp: Import) -> bool:
    """The registration hook, and a program block's use of the shared floor."""
    return (imp.module, imp.target) == REGISTRATION_HOOK or (imp.program and imp.target_package in PROGRAMS_MAY_IMPORT)


def upward_imports(found: list[Import]) -> list[str]:
    """Each import of another package that the floor plan does not allow, as a line that names it."""
    plan, floor = {package.name: package for package in PACKAGES}, floors()
    problems = []
    for imp in found:
        source, target = imp.package, imp.target_package
        if source == target or target in plan[source].imports or is_exempt(imp):
            continue
        allowed = ", ".join(plan[source].imports) or "nothing else of this project"
        problems.append(
            f"{imp}, but {source} (floor {floor[source]}) may import {allowed}; {target} is on floor {floor[target]}"
        )
    return problems


def circle(edges: list[tuple[str, str, Import]]) -> list[Import]:
    """The imports of one circle among `edges` (`(from, to, the import)`), in order; `[]` when there is none."""
    following = {}
    for source, target, imp in edges:
        if source != target:
            following.setdefault(source, []).append((target, imp))
    state, path = {}, []  # path: (node, the import that leaves it) on the way down

    def visit(node: str) -> list[Import]:
        state[node] = "open"
        for target, imp in following.get(node, ()):
            path.append((node, imp))
            if state.get(target) == "open":
                start = next(i for i, (n, _) in enumerate(path) if n == target)
                return [i for _, i in path[start:]]
            if target not in state and (found := visit(target)):
                return found
            path.pop()
        state[node] = "done"
        return []

    for node in sorted(following):
        if node not in state and (found := visit(node)):
            return found
    return []


def package_circle(found: list[Import]) -> list[Import]:
    return circle([(imp.package, imp.target_package, imp) for imp in found if not is_exempt(imp)])


def file_circle(found: list[Import]) -> list[Import]:
    return circle([(imp.module, imp.target, imp) for imp in found if not is_exempt(imp)])


def describe(imports_of_a_circle: list[Import]) -> str:
    return " -> ".join(str(imp) for imp in imports_of_a_circle)


# --------------------------------------------------------------------------------------------------- the picture


def floor_plan() -> str:
    """The picture of `PACKAGES` in docs/architecture.md: the floors from the top, each package with its folder, what
    it owns and what it may import, then the exceptions."""
    floor = floors()
    wrap = functools.partial(textwrap.wrap, break_on_hyphens=False)
    width = max(len(package.name) for package in PACKAGES) + 2
    folder_width = max(len(package.folder) for package in PACKAGES) + 3
    indent = 9 + width + folder_width
    lines = []
    for level in range(max(floor.values()), -1, -1):
        for index, package in enumerate(p for p in PACKAGES if floor[p.name] == level):
            label = f"floor {level}" if index == 0 else ""
            may = ", ".join(package.imports) or "nothing else of this project"
            text = wrap(package.owns, 119 - indent) + wrap(f"may import: {may}", 119 - indent)
            lines.append(f"{label:<9}{package.name:<{width}}{package.folder + '/':<{folder_width}}{text[0]}")
            lines += [" " * indent + line for line in text[1:]]
        lines.append("")
    module, target = REGISTRATION_HOOK
    notes = (
        "Every import runs down the floors, never up or sideways, and no files import each other in a circle. "
        f"One exception: {module}/__init__.py ends with a guarded import of {target}, which registers the "
        f'"music-embedding" pipeline for `import {module}`. A file\'s `if __name__ == "__main__":` block is a '
        f"program and may also use {', '.join(PROGRAMS_MAY_IMPORT)}."
    )
    return "\n".join(lines + wrap(notes, 119)) + "\n"


def floor_plan_span(text: str) -> tuple[int, int] | None:
    """Where the floor plan's `text` block sits in the page: the span of its content, or None."""
    match = re.search(re.escape(FLOOR_PLAN_MARKER) + r"\n\n?```text\n(.*?)```", text, re.S)
    return match.span(1) if match else None


# ---------------------------------------------------------------------------------------------------- the tests


def test_the_floor_plan_is_what_pyproject_installs():
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    assert {package.name: package.folder for package in PACKAGES} == setuptools["package-dir"]
    installed = set(setuptools["packages"])
    assert {name for name in installed if "." not in name} == {package.name for package in PACKAGES}
    # Every sub-package too: a non-editable install (a wheel) holds only what is listed.
    for package in PACKAGES:
        for init in sorted((ROOT / package.folder).rglob("__init__.py")):
            parts = init.parent.relative_to(ROOT / package.folder).parts
            assert ".".join((package.name, *parts)) in installed, f"pyproject.toml's packages lack {init.parent}"
    names = {package.name for package in PACKAGES}
    for package in PACKAGES:
        assert set(package.imports) <= names - {package.name}, package
    assert floors() == {
        "modeling_myna": 0, "myna_common": 0, "myna_evaluation": 1, "myna_pipelines": 1, "myna_training": 2
    }  # fmt: skip


def test_every_import_names_a_module_that_exists():
    known = modules()
    missing = [str(imp) for imp in imports() if imp.target not in known]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_every_import_runs_down_the_floors():
    problems = upward_imports(imports())
    assert not problems, "imports against the floor plan (tests/test_imports.py):\n" + "\n".join(problems)


def test_no_packages_import_each_other_in_a_circle():
    found = package_circle(imports())
    assert not found, f"packages in a circle: {describe(found)}"


def test_no_files_import_each_other_in_a_circle():
    found = file_circle(imports())
    assert not found, f"files in a circle: {describe(found)}"


def test_the_registration_hook_is_the_one_exception_and_ends_the_package():
    module, target = REGISTRATION_HOOK
    upward = [imp for imp in imports() if imp.package == module and imp.target_package != module]
    assert [(imp.path, imp.target, imp.program) for imp in upward if not imp.program] == [
        (f"{module}/__init__.py", target, False)
    ]
    # Guarded (an install without the pipelines goes without) and last: only `__all__` follows it.
    tree = ast.parse((ROOT / module / "__init__.py").read_text(encoding="utf-8"))
    hook = next(
        i for i, node in enumerate(tree.body)
        if isinstance(node, ast.Try) and any(isinstance(n, ast.Import) for n in ast.walk(node))
    )  # fmt: skip
    handlers = [ast.unparse(handler.type) for handler in tree.body[hook].handlers]
    assert handlers == ["ModuleNotFoundError"], handlers
    after = tree.body[hook + 1 :]
    assert all(isinstance(node, ast.Assign) and node.targets[0].id == "__all__" for node in after), ast.dump(after[0])
    # Program blocks reach only the shared floor.
    assert all(imp.target_package in PROGRAMS_MAY_IMPORT for imp in upward if imp.program)


def test_the_docs_draw_this_floor_plan():
    text = ARCHITECTURE_PAGE.read_text(encoding="utf-8")
    span = floor_plan_span(text)
    assert span is not None, f"docs/architecture.md has no floor plan: a ```text block after {FLOOR_PLAN_MARKER}"
    stale = "docs/architecture.md's floor plan is stale: python -m tests.test_imports"
    assert text[span[0] : span[1]] == floor_plan(), stale


# A planted import, in a copy of the packages: the checks above must name it.


@pytest.fixture
def copy_of_the_packages(tmp_path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package.folder, tmp_path / package.folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def plant(root: Path, path: str, code: str) -> int:
    """Appends `code` to the file `path` under `root`; returns the line of its first line."""
    file = root / path
    text = file.read_text(encoding="utf-8")
    file.write_text(text + "\n\n" + textwrap.dedent(code), encoding="utf-8")
    return text.count("\n") + 3


def test_a_planted_upward_import_is_named(copy_of_the_packages):
    root = copy_of_the_packages
    assert upward_imports(imports(root)) == []
    line = plant(root, "modeling_myna/mel.py", "def planted():\n    from myna_training.losses import InfoNCELoss\n")
    assert upward_imports(imports(root)) == [
        f"modeling_myna/mel.py:{line + 1} imports myna_training.losses, but modeling_myna (floor 0) may import "
        "nothing else of this project; myna_training is on floor 2"
    ]
    # The exceptions stay narrow: the hook only from modeling_myna/__init__.py, program blocks only to myna_common.
    hook = plant(root, "modeling_myna/masking.py", "import myna_pipelines.music_embedding\n")
    program = plant(root, "modeling_myna/model_card.py", 'if __name__ == "__main__":\n    import myna_training.data\n')
    named = [problem.split(",")[0] for problem in upward_imports(imports(root))]
    assert named == [
        f"modeling_myna/masking.py:{hook} imports myna_pipelines.music_embedding",
        f"modeling_myna/mel.py:{line + 1} imports myna_training.losses",
        f"modeling_myna/model_card.py:{program + 1} imports myna_training.data",
    ]


def test_a_planted_circle_of_packages_is_named(copy_of_the_packages):
    root = copy_of_the_packages
    assert package_circle(imports(root)) == []
    line = plant(root, "evaluation/grid.py", "from myna_training.losses import InfoNCELoss  # noqa\n")
    found = package_circle(imports(root))
    assert {imp.path for imp in found} >= {"evaluation/grid.py"} and found[-1].target_package == found[0].package
    assert f"evaluation/grid.py:{line} imports myna_training.losses" in describe(found)
    assert any(problem.startswith(f"evaluation/grid.py:{line} ") for problem in upward_imports(imports(root)))


def test_a_planted_circle_of_files_is_named(copy_of_the_packages):
    # The circle this test was written against: a family taking its definitions back from tasks.py.
    root = copy_of_the_packages
    assert file_circle(imports(root)) == []
    line = plant(root, "evaluation/task_families/custom.py", "from ..tasks import TaskSpec  # noqa\n")
    found = file_circle(imports(root))
    assert f"evaluation/task_families/custom.py:{line} imports myna_evaluation.tasks" in describe(found)
    assert found[-1].target == found[0].module  # a closed circle
    assert upward_imports(imports(root)) == []  # within one package: only the circle check sees it


if __name__ == "__main__":  # redraws docs/architecture.md's floor plan from PACKAGES
    text = ARCHITECTURE_PAGE.read_text(encoding="utf-8")
    span = floor_plan_span(text)
    if span is None:
        raise SystemExit(
            f"docs/architecture.md has no floor plan block: add {FLOOR_PLAN_MARKER} and an empty ```text block."
        )
    ARCHITECTURE_PAGE.write_text(text[: span[0]] + floor_plan() + text[span[1] :], encoding="utf-8")
    print(floor_plan())
