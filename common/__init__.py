"""What every Myna command, layer and test shares (installed as `myna_common`), on the floor all of them may import.

- `cli_support`: the command-line helpers: dataclass options parsed with argparse before torch is imported, a
  user's mistake as one line (`run_cli`), "did you mean" for a misspelt option, device checks.
- `synthetic`: the generated music corpus, labelled (key, tempo, instruments, style): the default pre-training data,
  the `synthetic-*` evaluation tasks and the tests' audio.

It imports no other package of this project, and stays light: importing it, or either module, loads neither torch
nor transformers. `myna_pipelines.cli_support` and `myna_training.synthetic`, where these modules lived first,
re-export them.
"""
