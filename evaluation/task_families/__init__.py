"""Task families, one module per family; `myna_evaluation.tasks.load_task` dispatches to them by task name.

- `paper`: the four tasks of the paper's Table 1 (MagnaTagATune, GTZAN, GiantSteps key, EmoMusic), from their
  original release, the MARBLE layout or the Hub.
- `synthetic`: the generated-corpus tasks (`synthetic-key`, `-tempo`, `-tags`, `-style`).
- `custom`: a user's own labelled audio, described by a small YAML task file (`--tasks custom:my_task.yaml`).
- `marble`: MARBLE's clip-level tasks, MTG-Jamendo (genre, instrument, mood/theme, top-50), NSynth (instrument
  family, pitch) and VocalSet (singer, technique), from their original layouts or MARBLE's JSONL files.

What they share (`TaskSpec`, the splits, the `DatasetDict` builder, the MARBLE JSONL reader, a user's split file) is
in `base`, which every family imports and none imports back.
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
