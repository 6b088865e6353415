"""Labelled clips rendered from the score corpus that ships with music21: pieces, excerpt plans, labels, MIDI and
FluidSynth rendering.

A piece is read once from the corpus into plain note lists (`ScorePiece`, JSON-cached); everything after that is a
pure function of the notes and a seed, so a rebuild plans the same clips. Each clip is a window of a piece at a
rendering tempo (quarter notes per minute, log-uniform), transposed so that the 24 keys come out balanced, with a
General MIDI program per part; its labels come from the score and those choices:

- key: Krumhansl-Schmuckler on the window's pitch-class durations (music21's Krumhansl-Kessler weights), kept only
  when it agrees with the score's key signature (the signature's major or relative minor) and the score is not in
  a church mode; then transposed with the audio;
- composer or collection: the corpus folder (bach, palestrina, essenFolksong, ...);
- instrument families: the General MIDI families (program // 8, GM 1 sound set) of the programs used;
- tempo: the rendering tempo.

Clips are rendered many to one FluidSynth call (loading the SoundFont takes about a second): the batch's clips are
laid one after the other, `gap_seconds` apart, in one MIDI file whose tempo is fixed, so note times are written in
seconds, and the audio is cut back into clips.
"""

import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np


# Corpus folders used as classes by default; `tonal` ones feed the key task (modal Renaissance polyphony has no
# major/minor key to label).
COLLECTIONS = {
    "bach": True,
    "beethoven": True,
    "essenFolksong": True,
    "monteverdi": False,
    "mozart": True,
    "oneills1850": True,
    "palestrina": False,
    "ryansMammoth": True,
    "trecento": False,
}
SCORE_EXTENSIONS = (".mxl", ".xml", ".musicxml", ".krn", ".abc")  # not .rntxt (Roman-numeral analyses)
FORMAT_PREFERENCE = (".mxl", ".musicxml", ".xml", ".krn", ".abc")  # one file per work where several formats exist

# 24 keys spelled as evaluation/tasks.py KEY_NAMES (mir_eval, flats).
TONICS = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")

# General MIDI 1 families (program // 8) and the programs drawn for each: the plainer sounds of each family of
# FluidR3_GM (effects, percussive, ethnic and sound-effect families left out).
GM_FAMILIES = (
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
)
FAMILY_PROGRAMS = {
    "piano": (0, 1, 4, 6),  # grand, bright, electric piano 1, harpsichord
    "chromatic_percussion": (8, 11, 12, 13),  # celesta, vibraphone, marimba, xylophone
    "organ": (16, 19, 21),  # drawbar, church organ, accordion
    "guitar": (24, 25, 26),  # nylon, steel, jazz
    "bass": (32, 33, 35),  # acoustic, finger, fretless
    "strings": (40, 41, 42, 45),  # violin, viola, cello, pizzicato
    "ensemble": (48, 49, 52, 53),  # string ensembles, choir aahs, voice oohs
    "brass": (56, 57, 60, 61),  # trumpet, trombone, French horn, brass section
    "reed": (65, 68, 70, 71),  # alto sax, oboe, bassoon, clarinet
    "pipe": (72, 73, 74, 75),  # piccolo, flute, recorder, pan flute
    "synth_lead": (80, 81),  # square, sawtooth
    "synth_pad": (88, 89),  # new age, warm
}
TICKS_PER_BEAT = 480
MIDI_TEMPO = 500_000  # microseconds per beat: 120 bpm, so one second is 960 ticks; clip tempi live in note times
TICKS_PER_SECOND = TICKS_PER_BEAT * 1_000_000 // MIDI_TEMPO


class ScoreError(ValueError):
    """A score that gives no usable notes."""


def family_of(program: int) -> str:
    """The General MIDI family of `program` (0-127), or a ValueError outside the 12 families used here."""
    index = program // 8
    if not 0 <= program < 128 or index >= len(GM_FAMILIES):
        raise ValueError(f"GM program {program} is outside the families used here ({GM_FAMILIES[0]} .. synth_pad).")
    return GM_FAMILIES[index]


@dataclass
class ScorePiece:
    """One piece as note lists. `parts[i]` holds `(onset, duration, midi_pitch)` in quarter notes from the start."""

    piece_id: str  # "bach/bwv66.6", "essenFolksong/altdeu10#17"
    collection: str
    group: str  # the work: pieces of one group never span two splits
    title: str
    parts: list[list[tuple[float, float, int]]]
    length: float  # quarter notes
    key_signature: int | None = None  # sharps (negative: flats) of the first signature
    mode: str | None = None  # the score's own mode when it names one (major, minor, dorian, ...)

    @classmethod
    def from_dict(cls, values: dict) -> "ScorePiece":
        values = dict(values)
        values["parts"] = [[tuple(note) for note in part] for part in values["parts"]]
        return cls(**values)


@dataclass
class ClipPlan:
    """How one clip is rendered and labelled; a pure function of the piece, the clip's index and the seed."""

    clip_id: str
    piece_id: str
    collection: str
    group: str
    start: float  # quarter notes
    tempo: float  # quarter notes per minute
    transpose: int  # semitones
    programs: list[int]  # one per part
    families: list[str]  # sorted, distinct
    key: str | None  # after transposition; None when the window's key is not trusted
    key_correlation: float
    seconds: float
    velocities: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- the corpus


def corpus_collections() -> list[str]:
    """The top-level folders of music21's corpus (composers and collections)."""
    from music21 import corpus

    relative = (str(p).replace(os.sep, "/").split("/corpus/", 1)[-1] for p in corpus.getCorePaths())
    return sorted({path.split("/", 1)[0] for path in relative})


def corpus_files(collections) -> dict[str, list[str]]:
    """Score files of each corpus folder, one format per work (`FORMAT_PREFERENCE`), sorted."""
    from music21 import corpus

    by_collection: dict[str, dict[str, str]] = {c: {} for c in collections}
    for path in corpus.getCorePaths():
        relative = str(path).replace(os.sep, "/").split("/corpus/", 1)[-1]
        collection = relative.split("/", 1)[0]
        stem, extension = os.path.splitext(relative)
        if collection not in by_collection or extension.lower() not in SCORE_EXTENSIONS:
            continue
        known = by_collection[collection].get(stem)
        if known is None or FORMAT_PREFERENCE.index(extension.lower()) < FORMAT_PREFERENCE.index(
            os.path.splitext(known)[1].lower()
        ):
            by_collection[collection][stem] = str(path)
    return {c: sorted(files.values()) for c, files in by_collection.items()}


def work_group(collection: str, relative_stem: str, title: str | None = None) -> str:
    """The work a piece belongs to, so that movements, harmonisations of one cantata and tunes of one title stay
    together: `beethoven/opus18no1/movement2` -> `beethoven/opus18no1`, `bach/bwv66.6` -> `bach/bwv66`, a folk
    tune -> its normalised title."""
    parts = relative_stem.split("/")
    if len(parts) > 2:
        return "/".join(parts[:2])
    stem = parts[-1]
    if collection == "bach":
        match = re.match(r"(bwv\d+)", stem, re.IGNORECASE)
        if match:
            return f"bach/{match.group(1).lower()}"
    if title and "#" in relative_stem:  # a tune of a collection file: tunes of one title are one work
        return f"{collection}/{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')}"
    return f"{collection}/{stem.split('#')[0]}"


def piece_from_score(score, piece_id: str, collection: str, group: str) -> ScorePiece:
    """Note lists of a music21 `Score` (ties merged, chords as separate pitches, grace notes dropped)."""
    from music21 import key as m21key

    parts = []
    sources = list(score.parts) or [score]
    for part in sources:
        notes = []
        for element in part.flatten().stripTies().notes:
            duration = float(element.quarterLength)
            if duration <= 0:
                continue
            for pitch in element.pitches:
                notes.append((float(element.offset), duration, int(pitch.midi)))
        if notes:
            parts.append(sorted(notes))
    if not parts:
        raise ScoreError(f"{piece_id}: no notes")
    signature, mode = None, None
    for found in score.recurse().getElementsByClass(m21key.KeySignature):
        signature = int(found.sharps)
        mode = getattr(found, "mode", None)
        break
    length = max(onset + duration for part in parts for onset, duration, _ in part)
    title = (score.metadata.title if score.metadata and score.metadata.title else "") or ""
    return ScorePiece(piece_id, collection, group, title, parts, float(length), signature, mode)


def read_pieces(path: str, collection: str) -> list[ScorePiece]:
    """Every piece of one corpus file (a collection file such as an Essen or O'Neill's `.abc` gives many)."""
    from music21 import converter, stream

    relative_stem = os.path.splitext(str(path).replace(os.sep, "/").split("/corpus/", 1)[-1])[0]
    parsed = converter.parse(path)
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    pieces = []
    for index, score in enumerate(scores):
        piece_id = relative_stem if len(scores) == 1 else f"{relative_stem}#{index}"
        title = score.metadata.title if score.metadata and score.metadata.title else None
        try:
            pieces.append(piece_from_score(score, piece_id, collection, work_group(collection, piece_id, title)))
        except ScoreError:
            continue
    return pieces


# ---------------------------------------------------------------------------------------------- labels


def key_profiles() -> tuple[np.ndarray, np.ndarray]:
    """music21's Krumhansl-Kessler major and minor weights (tonic first)."""
    from music21.analysis.discrete import KrumhanslSchmuckler

    weights = KrumhanslSchmuckler()
    return np.asarray(weights.getWeights("major"), float), np.asarray(weights.getWeights("minor"), float)


def pitch_class_durations(notes, start: float, stop: float) -> np.ndarray:
    """`(12,)` duration of each pitch class inside `[start, stop)` (quarter notes), notes clipped to the window."""
    histogram = np.zeros(12)
    for onset, duration, pitch in notes:
        overlap = min(onset + duration, stop) - max(onset, start)
        if overlap > 0:
            histogram[pitch % 12] += overlap
    return histogram


def estimate_key(histogram: np.ndarray, profiles=None) -> tuple[int, str, float]:
    """Krumhansl-Schmuckler: `(tonic pitch class, "major"|"minor", correlation)` of the best of 24 rotations."""
    major, minor = profiles if profiles is not None else key_profiles()
    if histogram.sum() <= 0:
        return 0, "major", 0.0
    best = (0, "major", -2.0)
    for mode, profile in (("major", major), ("minor", minor)):
        for tonic in range(12):
            correlation = float(np.corrcoef(histogram, np.roll(profile, tonic))[0, 1])
            if correlation > best[2]:
                best = (tonic, mode, correlation)
    return best


def signature_sharps(tonic: int, mode: str) -> int:
    """Sharps (negative: flats) of the conventional signature of a key, in -6..5 (Gb major, not F# major)."""
    major_tonic = tonic if mode == "major" else (tonic + 3) % 12
    sharps = (major_tonic * 7) % 12  # fifths from C
    return sharps - 12 if sharps > 5 else sharps


def key_name(tonic: int, mode: str) -> str:
    return f"{TONICS[tonic % 12]} {mode}"


# ---------------------------------------------------------------------------------------------- planning


def _rng(seed: int, *names) -> np.random.Generator:
    digest = hashlib.sha256(("/".join(str(n) for n in (seed, *names))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class PlanSettings:
    clip_seconds: float = 10.0
    tempo_range: tuple[float, float] = (60.0, 160.0)
    max_families: int = 3
    min_key_correlation: float = 0.5
    seed: int = 0


def choose_programs(rng: np.random.Generator, parts, max_families: int) -> list[int]:
    """A GM program per part from 1..`max_families` distinct families; `bass` only on the lowest part, and only
    beside another family."""
    count = len(parts)
    wanted = int(rng.integers(1, min(max_families, count, len(GM_FAMILIES)) + 1))
    families = [f for f in GM_FAMILIES if f != "bass" or wanted > 1]  # a bass under something, never alone
    chosen = list(rng.choice(families, size=wanted, replace=False))
    lowest = int(np.argmin([np.mean([p for _, _, p in part]) for part in parts]))
    assignment = [None] * count
    if "bass" in chosen:
        assignment[lowest] = "bass"
    others = [f for f in chosen if f != "bass"] or ["bass"]
    free = [i for i in range(count) if assignment[i] is None]
    order = list(rng.permutation(free))
    for position, part_index in enumerate(order):  # every chosen family gets a part, the rest at random
        assignment[part_index] = others[position] if position < len(others) else others[int(rng.integers(len(others)))]
    return [int(rng.choice(FAMILY_PROGRAMS[f])) for f in assignment]


def plan_clips(piece: ScorePiece, count: int, settings: PlanSettings, tonal: bool, profiles=None) -> list[ClipPlan]:
    """`count` clips of `piece`: windows from the start and then evenly spaced; tempo, transposition and programs
    drawn from a generator seeded by the piece and the clip's index, so a rebuild plans the same clips."""
    return [
        plan_clip(
            piece, index, float(math.floor(piece.length * index / count)) if index else 0.0, settings, tonal, profiles
        )
        for index in range(count)
    ]


def plan_clip(
    piece: ScorePiece, index: int, start: float, settings: PlanSettings, tonal: bool, profiles=None
) -> ClipPlan:
    """Clip `index` of `piece`, its window from quarter note `start`: the same plan whenever it is asked again."""
    rng = _rng(settings.seed, piece.piece_id, index)
    low, high = settings.tempo_range
    tempo = float(round(math.exp(rng.uniform(math.log(low), math.log(high))), 1))
    window = settings.clip_seconds * tempo / 60.0
    key, correlation = None, 0.0
    heard = [note for part in window_notes(piece, start, window) for note in part]
    tonic, mode, correlation = estimate_key(pitch_class_durations(heard, 0.0, window), profiles)
    trusted = (
        tonal
        and piece.key_signature is not None
        and piece.mode in (None, "major", "minor")
        and signature_sharps(tonic, mode) == piece.key_signature
        and correlation >= settings.min_key_correlation
    )
    target = int(rng.integers(12))
    shift = ((target - tonic + 6) % 12) - 6  # -6..5 semitones, the nearest way to the drawn tonic
    if trusted:
        key = key_name(tonic + shift, mode)
    programs = choose_programs(rng, piece.parts, settings.max_families)
    velocities = [int(v) for v in rng.integers(70, 105, size=len(piece.parts))]
    return ClipPlan(
        clip_id=f"{piece.piece_id}@{index}",
        piece_id=piece.piece_id,
        collection=piece.collection,
        group=piece.group,
        start=start,
        tempo=tempo,
        transpose=int(shift),
        programs=programs,
        families=sorted({family_of(p) for p in programs}),
        key=key,
        key_correlation=round(float(correlation), 4),
        seconds=settings.clip_seconds,
        velocities=velocities,
    )


def window_notes(piece: ScorePiece, start: float, window: float) -> list[list[tuple[float, float, int]]]:
    """Each part's notes sounding in `[start, start + window)` quarter notes, from the window's start and cut at
    its end; past the piece's end it repeats from its beginning (as tunes do)."""
    period = max(piece.length, 1e-6)
    out = []
    for part in piece.parts:
        notes = []
        for repeat in range(math.floor(start / period), math.floor((start + window) / period) + 1):
            shift = repeat * period - start
            for onset, duration, pitch in part:
                begin = onset + shift
                if 0 <= begin < window:
                    notes.append((begin, min(begin + duration, window) - begin, pitch))
        out.append(notes)
    return out


def clip_notes(piece: ScorePiece, plan: ClipPlan) -> list[list[tuple[float, float, int]]]:
    """Each part's notes of the clip in SECONDS from its start, transposed (notes pushed out of MIDI's range are
    dropped)."""
    seconds_per_quarter = 60.0 / plan.tempo
    return [
        [
            (begin * seconds_per_quarter, duration * seconds_per_quarter, pitch + plan.transpose)
            for begin, duration, pitch in part
            if 0 <= pitch + plan.transpose < 128
        ]
        for part in window_notes(piece, plan.start, plan.seconds * plan.tempo / 60.0)
    ]


# ---------------------------------------------------------------------------------------------- MIDI, rendering


def write_batch_midi(path: str, clips: list[list[list[tuple[float, float, int]]]], programs, velocities, slot: float):
    """One MIDI file holding `clips` one after the other, clip `i` starting at `i * slot` seconds.

    `clips[i][part]` are `(start_s, duration_s, pitch)`; each part plays on its own channel (drums' channel 9
    skipped; parts past 15 share channels), with its program set at the clip's start and every sound cut at its
    end.
    """
    import mido

    channels = [c for c in range(16) if c != 9]
    events = []  # (tick, order, message); note-offs before note-ons at the same tick
    for index, parts in enumerate(clips):
        offset = index * slot
        begin = round(offset * TICKS_PER_SECOND)
        for part_index, notes in enumerate(parts):
            channel = channels[part_index % len(channels)]
            program = mido.Message("program_change", channel=channel, program=programs[index][part_index])
            events.append((begin, 0, program))
            velocity = velocities[index][part_index] if velocities[index] else 90
            for start, duration, pitch in notes:
                on = round((offset + start) * TICKS_PER_SECOND)
                off = max(on + 1, round((offset + start + duration) * TICKS_PER_SECOND))
                events.append((on, 2, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
                events.append((off, 1, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        end = round((offset + slot) * TICKS_PER_SECOND) - 1
        for channel in channels:
            events.append((end, 1, mido.Message("control_change", channel=channel, control=120, value=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=MIDI_TEMPO, time=0))
    now = 0
    for tick, _, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(path)


def find_soundfont(path: str | None = None) -> str:
    """The SoundFont to render with: `path`, or fluid-soundfont-gm's FluidR3_GM.sf2."""
    candidates = [path] if path else ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2"]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"no SoundFont at {', '.join(c for c in candidates if c)}: install Debian's fluid-soundfont-gm "
        "(apt-get install fluid-soundfont-gm) or pass --soundfont PATH."
    )


def render_batch(
    pieces: dict[str, ScorePiece],
    plans: list[ClipPlan],
    soundfont: str,
    sampling_rate: int = 16_000,
    gap_seconds: float = 3.0,
    fluidsynth: str = "fluidsynth",
) -> list[np.ndarray]:
    """Renders `plans` with one FluidSynth call; returns one mono float32 array of `plan.seconds` per plan."""
    import soundfile as sf

    if shutil.which(fluidsynth) is None:
        raise FileNotFoundError(f"{fluidsynth} is not on PATH: install it (apt-get install -y fluidsynth)")
    slot = max(p.seconds for p in plans) + gap_seconds
    with tempfile.TemporaryDirectory(prefix="myna-render-") as scratch:
        midi_path, wav_path = os.path.join(scratch, "batch.mid"), os.path.join(scratch, "batch.wav")
        write_batch_midi(
            midi_path,
            [clip_notes(pieces[p.piece_id], p) for p in plans],
            [p.programs for p in plans],
            [p.velocities for p in plans],
            slot,
        )
        command = [fluidsynth, "-ni", "-q", "-g", "0.5", "-r", str(sampling_rate), "-F", wav_path, soundfont]
        command.append(midi_path)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not os.path.isfile(wav_path):
            raise RuntimeError(f"fluidsynth failed ({result.returncode}): {result.stderr.strip()[-300:]}")
        audio, rate = sf.read(wav_path, dtype="float32", always_2d=True)
    audio = audio.mean(1)
    clips = []
    for index, plan in enumerate(plans):
        start = round(index * slot * rate)
        clip = audio[start : start + round(plan.seconds * rate)]
        clips.append(np.pad(clip, (0, round(plan.seconds * rate) - len(clip))))
    return clips


def normalize_loudness(audio: np.ndarray, target_rms: float = 0.1, peak: float = 0.95) -> np.ndarray:
    """Scales to `target_rms` (about -20 dBFS), then down if a peak would pass `peak`."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if rms <= 0:
        return audio
    scaled = audio * (target_rms / rms)
    top = float(np.abs(scaled).max())
    return (scaled * (peak / top) if top > peak else scaled).astype(np.float32)


__all__ = [
    "COLLECTIONS",
    "ClipPlan",
    "FAMILY_PROGRAMS",
    "GM_FAMILIES",
    "PlanSettings",
    "ScoreError",
    "ScorePiece",
    "TONICS",
    "choose_programs",
    "clip_notes",
    "corpus_collections",
    "corpus_files",
    "estimate_key",
    "family_of",
    "find_soundfont",
    "key_name",
    "normalize_loudness",
    "pitch_class_durations",
    "piece_from_score",
    "plan_clip",
    "plan_clips",
    "read_pieces",
    "render_batch",
    "signature_sharps",
    "window_notes",
    "work_group",
    "write_batch_midi",
]
