"""Runs transformers' own `ModelTesterMixin` against Myna (square and hybrid); not part of the default suite.

transformers' test mixins ship in its source distribution only. This script lays out a scratch `tests/` package
from an unpacked sdist, stubs the two helper modules the sdist leaves out (export and generation mixins: Myna
generates nothing, and `tests/test_modeling_myna_common.py` covers export), adds `myna_mixins.py` and runs pytest:

    pip download transformers==$(python -c "import transformers; print(transformers.__version__)") \\
        --no-binary :all: --no-deps -d /tmp/tf && tar xzf /tmp/tf/transformers-*.tar.gz -C /tmp/tf
    pip install parameterized --target /tmp/tfdeps    # the mixins import it
    PYTHONPATH=/tmp/tfdeps python tests/transformers_mixins/run.py /tmp/tf/transformers-*/tests

Expected with transformers 5.25: 204 passed, 152 skipped, 0 failed (1430 subtests passed). Myna takes float16
`input_values` (its tokenizers compute in float32), so the float16 cases of `test_eager_matches_sdpa_inference`
pass; for the hybrid, `myna_mixins.py` hands `"both"` one noise tensor per tokenizer where the mixins build one.
"""

import os
import shutil
import subprocess
import sys
import tempfile


def main(sdist_tests: str) -> int:
    scratch = tempfile.mkdtemp(prefix="myna-mixins-")
    tests = os.path.join(scratch, "tests")
    os.makedirs(os.path.join(tests, "models"))
    for name in os.listdir(sdist_tests):
        if name.startswith("test_") and name.endswith(".py"):
            shutil.copy(os.path.join(sdist_tests, name), tests)
    stubs = {
        "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
        "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    }
    for path, text in stubs.items():
        os.makedirs(os.path.join(tests, os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(tests, path), "w") as f:
            f.write(text)
    for folder in ("", "models", "exporters", "generation"):
        open(os.path.join(tests, folder, "__init__.py"), "a").close()
    harness = os.path.join(os.path.dirname(os.path.abspath(__file__)), "myna_mixins.py")
    shutil.copy(harness, os.path.join(tests, "models", "test_myna.py"))
    command = [sys.executable, "-m", "pytest", "tests/models/test_myna.py", "-q", "-p", "no:cacheprovider"]
    command += ["-W", "ignore"]
    return subprocess.call(command, cwd=scratch)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
