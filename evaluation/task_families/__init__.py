"""Task families beyond the paper's four (which live in `myna_evaluation.tasks`), one module per family.

- `custom`: a user's own labelled audio, described by a small YAML task file (`--tasks custom:my_task.yaml`).
- `marble`: MARBLE's clip-level tasks, MTG-Jamendo (genre, instrument, mood/theme, top-50), NSynth (instrument
  family, pitch) and VocalSet (singer, technique), from their original layouts or MARBLE's JSONL files.

`myna_evaluation.tasks.load_task` dispatches to both by task name. What they share with the paper's tasks (`TaskSpec`,
the splits, the `DatasetDict` builder, the MARBLE JSONL reader) is in `base`, which both sides import.
"""

from .custom import CustomTask, TaskFileError, group_split, load_custom_task, read_task_file
from .marble import MARBLE_HEADERS, MARBLE_TASKS, load_marble, load_marble_task, marble_probe_grid, marble_spec


__all__ = [
    "CustomTask",
    "MARBLE_HEADERS",
    "MARBLE_TASKS",
    "TaskFileError",
    "group_split",
    "load_custom_task",
    "load_marble",
    "load_marble_task",
    "marble_probe_grid",
    "marble_spec",
    "read_task_file",
]
