"""The real-audio development benchmark: recorded game soundtracks from Debian's packages for pre-training
(`soundtracks`), and labelled clips rendered from music21's score corpus through FluidSynth (`scores`), built by one
resumable command (`build`, run as `python benchmarks/build_dev_benchmark.py`). Needs the `bench` extra (music21,
mido, librosa) and, to render, Debian's `fluidsynth` and `fluid-soundfont-gm`."""
