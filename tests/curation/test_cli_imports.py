"""`python -m curation` loads every stage's CLI; none of them may pull torch in with it.

Each stage's driver is a long-lived process on a cluster's head node (the memory benchmark of
`neardup_scale.py` samples it): torch alone adds ~470 MB of RSS to every one of them.
"""

import subprocess
import sys

HEAVY = ("torch", "open_clip", "transformers", "timm")


def test_curation_cli_imports_no_deep_learning_framework():
    code = (
        "import importlib, sys\n"
        "from curation import cli\n"
        "for name in cli.COMMAND_MODULES: importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
