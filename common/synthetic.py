"""Procedural music with labels: the embedded pre-training corpus and the labelled test data of this project.

Every clip is real (if plain) music: a diatonic chord progression in one of 24 keys, a melody drawn from the key's
scale that lands on chord tones on strong beats, a bass line on the chord roots, an accompaniment figure, and, for
the styles that have them, drums, all placed on a beat grid at the labelled tempo. Pitched parts are wavetable
voices (a few harmonics, an attack / decay / sustain / release envelope, optional fading brightness and a detuned
second oscillator); drums are pitch-swept sines and shaped noise. The labels are recoverable from the audio: the
key from its pitch-class profile, the tempo from its onsets, the instruments from the spectrum, the style from
its tempo range, rhythm and palette.

Clip `i` of `synthetic_music_dataset(n, seed)` is `generate_clip([seed, i])`: it depends only on `(seed, i)`, so a
larger set extends a smaller one. Synthesis is numpy only and vectorised per note; a 10 s clip takes a few ms.

Public API (fixed; other modules code against it): `KEYS`, `INSTRUMENTS`, `STYLES`, `generate_clip`,
`synthetic_music_dataset`, `write_synthetic_folder`.
"""

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .atomic import atomic_path


PITCH_CLASSES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]  # mir_eval spelling (flats)
KEYS = [f"{tonic} {mode}" for tonic in PITCH_CLASSES for mode in ("major", "minor")]
INSTRUMENTS = [
    "piano",
    "organ",
    "strings",
    "flute",
    "clarinet",
    "brass",
    "guitar",
    "marimba",
    "bass",
    "synth_lead",
    "synth_pad",
    "drums",
]
STYLES = ["ambient", "classical", "jazz", "rock", "electronic"]

DEFAULT_SAMPLING_RATE = 16_000  # Myna's rate (modeling_myna.SAMPLING_RATE); not imported to keep this module light
PEAK_LEVEL = 0.5  # every clip is peak-normalised to this
# `write_synthetic_folder` formats: soundfile (format, subtype); libsndfile >= 1.1 writes all four
AUDIO_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
MIN_TEMPO, MAX_TEMPO = 30.0, 300.0  # accepted `tempo` overrides, in BPM
BEATS_PER_BAR = 4

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
NATURAL_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
# The dominant (V) and leading-tone chords of a minor key take the raised seventh of the harmonic minor scale, as in
# common-practice harmony; that leading tone is what tells a minor key from its relative major.
RAISED_SEVENTH_DEGREES = (4, 6)

# Progressions as 0-based scale degrees, one chord per `harmonic_rhythm` beats, cycled; all start on the tonic.
MAJOR_PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4), (0, 0, 3, 4), (0, 1, 4, 0))
MINOR_PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 6, 5, 4), (0, 3, 0, 4), (0, 0, 3, 4), (0, 5, 1, 4))

WAVETABLE_BITS = 11  # 2048-sample single-cycle tables; indexed by the top bits of a uint32 phase accumulator
WAVETABLE_SIZE = 1 << WAVETABLE_BITS
NYQUIST_MARGIN = 0.45  # harmonics above this fraction of the sampling rate are dropped (band-limited tables)
_GENERATOR_VERSION = "2"  # part of the dataset fingerprint: bump when the audio for a given (seed, i) changes


@dataclass(frozen=True)
class Timbre:
    """One pitched instrument: a single-cycle spectrum and an envelope (times in seconds).

    The envelope rises linearly over `attack`, decays exponentially (time constant `decay`) towards `sustain`, and
    falls linearly to zero over `release` once the note ends. With `brightness_decay`, the harmonics above the
    fundamental die away with that time constant (struck and plucked strings); with `detune`, a second oscillator
    `detune` (relative) sharp thickens the sound (chorus). Percussive timbres (`sustain == 0`) are cut after
    `max_length`.
    """

    harmonics: tuple[float, ...]
    attack: float
    decay: float
    sustain: float
    release: float
    brightness_decay: float | None = None
    detune: float = 0.0
    max_length: float = 4.0


TIMBRES = {
    "piano": Timbre((1, 0.55, 0.35, 0.22, 0.14, 0.1, 0.07, 0.05), 0.004, 0.9, 0.0, 0.06, brightness_decay=0.25),
    "organ": Timbre((1, 0.8, 0.55, 0.5, 0, 0.35, 0, 0.3), 0.01, 1.0, 1.0, 0.03),
    "strings": Timbre(tuple(1 / n for n in range(1, 13)), 0.12, 0.4, 0.85, 0.18, detune=0.004),
    "flute": Timbre((1, 0.22, 0.08, 0.03), 0.06, 0.3, 0.9, 0.08),
    "clarinet": Timbre((1, 0, 0.55, 0, 0.35, 0, 0.22, 0, 0.12, 0, 0.06), 0.03, 0.3, 0.9, 0.05),
    "brass": Timbre((1, 0.9, 0.8, 0.65, 0.5, 0.4, 0.3, 0.2, 0.14, 0.1), 0.04, 0.25, 0.75, 0.07, brightness_decay=0.5),
    "guitar": Timbre((1, 0.75, 0.5, 0.4, 0.3, 0.22, 0.15, 0.1), 0.003, 0.6, 0.0, 0.05, brightness_decay=0.12),
    # marimba bars are tuned so their first overtones sit near the 4th and 10th harmonics
    "marimba": Timbre((1, 0, 0, 0.35, 0, 0, 0, 0, 0, 0.12), 0.002, 0.3, 0.0, 0.03, brightness_decay=0.04,
                      max_length=1.5),
    "bass": Timbre((1, 0.6, 0.3, 0.18, 0.1, 0.05), 0.005, 0.5, 0.35, 0.04),
    "synth_lead": Timbre(tuple(1 / n for n in range(1, 11)), 0.01, 0.3, 0.8, 0.05, detune=0.007),
    "synth_pad": Timbre((1, 0.45, 0.3, 0.2, 0.12, 0.08), 0.35, 1.0, 1.0, 0.35, detune=0.006),
}


@dataclass(frozen=True)
class Style:
    """How one style plays: its tempo range (BPM), its parts and the instruments each part may use.

    `accompaniment` lists (figure, palette) pairs, one part each; figures: "pad" (held chords), "alberti"
    (low-high-middle-high eighths), "arpeggio" (rising eighths over two octaves), "comp" (short syncopated chords),
    "strum" (eighth-note chords), "stabs" (off-beat chords). Bass figures: "sustain" (held roots), "half" (root and
    fifth in half notes), "walking" (quarter notes), "eighths", "offbeat" (off-beat eighths). `drums` names a
    pattern of `DRUM_PATTERNS` (or None: no drums). `melody_rhythms` are bars of durations in beats, negative ones
    rests. `swing` delays off-beat eighths to the last third of the beat; `sevenths` adds sevenths to the chords.
    """

    tempo_range: tuple[float, float]
    melody: tuple[str, ...]
    accompaniment: tuple[tuple[str, tuple[str, ...]], ...]
    bass_figure: str
    bass: tuple[str, ...]
    drums: str | None
    melody_rhythms: tuple[tuple[float, ...], ...]
    swing: bool = False
    sevenths: bool = False


STYLE_SPECS = {
    "ambient": Style(
        tempo_range=(60.0, 84.0),
        melody=("flute", "marimba", "synth_lead"),
        accompaniment=(("pad", ("synth_pad", "strings", "organ")), ("arpeggio", ("marimba", "piano", "guitar"))),
        bass_figure="sustain",
        bass=("synth_pad", "strings"),
        drums=None,
        melody_rhythms=((4,), (2, 2), (3, 1), (-2, 2), (2, -2), (1, 1, 2)),
    ),
    "classical": Style(
        tempo_range=(66.0, 112.0),
        melody=("flute", "clarinet", "strings", "piano"),
        accompaniment=(("alberti", ("piano", "guitar", "strings")),),
        bass_figure="half",
        bass=("strings", "piano"),
        drums=None,
        melody_rhythms=((1, 1, 1, 1), (2, 1, 1), (1, 0.5, 0.5, 2), (1.5, 0.5, 1, 1), (0.5, 0.5, 0.5, 0.5, 2)),
    ),
    "jazz": Style(
        tempo_range=(90.0, 180.0),
        melody=("brass", "clarinet", "flute", "piano"),
        accompaniment=(("comp", ("piano", "organ", "guitar")),),
        bass_figure="walking",
        bass=("bass",),
        drums="swing",
        melody_rhythms=(
            (0.5,) * 8,
            (1, 0.5, 0.5, 1.5, 0.5),
            (-0.5, 0.5, 0.5, 0.5, 2),
            (0.5, 1, 0.5, 2),
            (1.5, 0.5, 1, 1),
        ),
        swing=True,
        sevenths=True,
    ),
    "rock": Style(
        tempo_range=(100.0, 156.0),
        melody=("synth_lead", "brass", "guitar", "organ"),
        accompaniment=(("strum", ("guitar", "organ", "piano")),),
        bass_figure="eighths",
        bass=("bass",),
        drums="rock",
        melody_rhythms=((1, 1, 1, 1), (0.5, 0.5, 1, 2), (1, 0.5, 0.5, 1, 1), (2, 1, 1), (0.5, 0.5, 0.5, 0.5, 1, 1)),
    ),
    "electronic": Style(
        tempo_range=(118.0, 140.0),
        melody=("synth_lead", "marimba", "piano"),
        accompaniment=(("stabs", ("synth_pad", "synth_lead", "piano")),),
        bass_figure="offbeat",
        bass=("bass", "synth_lead"),
        drums="four_on_the_floor",
        melody_rhythms=((0.5,) * 8, (0.75, 0.75, 0.5, 0.75, 0.75, 0.5), (1, 0.5, 0.5, 1, 1), (-0.5, 0.5, 0.5, 0.5, 2)),
    ),
}

# Drum patterns: hits per bar as (drum, onset in beats, gain).
DRUM_PATTERNS = {
    "swing": [("ride", b, g) for b, g in ((0, 0.8), (1, 0.9), (1.5, 0.55), (2, 0.8), (3, 0.9), (3.5, 0.55))]
    + [("hat_closed", 1, 0.6), ("hat_closed", 3, 0.6), ("kick", 0, 0.5)],
    "rock": [("kick", 0, 1.0), ("kick", 2, 0.9), ("kick", 2.5, 0.6), ("snare", 1, 0.9), ("snare", 3, 0.9)]
    + [("hat_closed", b / 2, 0.35 if b % 2 else 0.75) for b in range(8)],
    "four_on_the_floor": [("kick", b, 1.0) for b in range(4)]
    + [("clap", 1, 0.7), ("clap", 3, 0.7)]
    + [("hat_open", b + 0.5, 0.5) for b in range(4)]
    + [("hat_closed", b / 4, 0.3) for b in range(16) if b % 2],
}

# Mix levels of the parts (before per-clip variation and peak normalisation).
PART_GAINS = {"melody": 0.32, "accompaniment": 0.13, "bass": 0.3, "drums": 0.5}
# Registers as MIDI note ranges [low, high).
MELODY_LOW = 60
CHORD_LOW = 53
BASS_LOW = 33


def _check_choice(value: Any, names: list[str], argument: str) -> int:
    """Index of `value` (a name from `names` or an index into it), or a ValueError naming the choices."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return int(value)
    elif isinstance(value, str) and value in names:
        return names.index(value)
    raise ValueError(f"{argument}={value!r} is not one of {names} (or an index 0..{len(names) - 1}).")


def _check_positive(value: Any, argument: str) -> None:
    if not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{argument} must be a positive number, got {value!r}.")


@lru_cache(maxsize=None)
def _wavetables(name: str, num_harmonics: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Single-cycle tables `(fundamental, upper harmonics, both)` of timbre `name`, each `(WAVETABLE_SIZE,)` float32.

    The first two are kept apart so that the upper harmonics can decay on their own (`Timbre.brightness_decay`).
    """
    harmonics = TIMBRES[name].harmonics[:num_harmonics]
    phase = 2 * np.pi * np.arange(WAVETABLE_SIZE) / WAVETABLE_SIZE
    upper = sum(amplitude * np.sin(n * phase) for n, amplitude in enumerate(harmonics[1:], start=2))
    scale = 1.0 / sum(harmonics)  # bounded peak whatever the spectrum
    fundamental = (np.sin(phase) * harmonics[0] * scale).astype(np.float32)
    upper = (upper * scale).astype(np.float32)
    return fundamental, upper, fundamental + upper


def _midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


class _Renderer:
    """Renders notes, chords and drum hits of one clip into a float32 buffer, caching what repeats.

    Music repeats itself: the same pitch with the same length and timbre comes back many times in a clip, so each
    (timbre, pitches, length) is synthesised once and then only added at every onset.
    """

    def __init__(self, num_samples: int, sampling_rate: int):
        self.sampling_rate = sampling_rate
        self.out = np.zeros(num_samples, dtype=np.float32)
        self._envelopes: dict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]] = {}
        self._sounds: dict[tuple, np.ndarray] = {}
        self._counter = np.arange(0, dtype=np.uint32)

    def _ramp(self, length: int) -> np.ndarray:
        """`arange(length)` as uint32 (the sample counter of the phase accumulators), grown on demand."""
        if len(self._counter) < length:
            self._counter = np.arange(max(length, 2 * len(self._counter)), dtype=np.uint32)
        return self._counter[:length]

    def _envelope(self, timbre_name: str, gate: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Envelope `(gate + release,)` float32 of a note held `gate` samples, and its fading-brightness copy."""
        key = (timbre_name, gate)
        if key not in self._envelopes:
            timbre, rate = TIMBRES[timbre_name], self.sampling_rate
            if timbre.sustain == 0:
                gate = min(gate, int(timbre.max_length * rate))
            release = max(1, int(timbre.release * rate))
            t = np.arange(gate + release, dtype=np.float32) * np.float32(1.0 / rate)  # seconds
            envelope = np.minimum(t * np.float32(1.0 / timbre.attack), np.float32(1.0))
            envelope *= timbre.sustain + (1 - timbre.sustain) * np.exp(t * np.float32(-1.0 / timbre.decay))
            envelope[gate:] *= np.linspace(1.0, 0.0, release, dtype=np.float32)
            bright = None
            if timbre.brightness_decay is not None:
                bright = envelope * np.exp(t * np.float32(-1.0 / timbre.brightness_decay))
            self._envelopes[key] = (envelope, bright)
        return self._envelopes[key]

    def _tone(self, timbre_name: str, midi: int, gate: int) -> np.ndarray:
        key = (timbre_name, midi, gate)
        if key not in self._sounds:
            timbre, rate = TIMBRES[timbre_name], self.sampling_rate
            frequency = _midi_to_hz(midi)
            envelope, bright = self._envelope(timbre_name, gate)
            num_harmonics = max(1, min(len(timbre.harmonics), int(NYQUIST_MARGIN * rate / frequency)))
            fundamental, upper, both = _wavetables(timbre_name, num_harmonics)
            ramp = self._ramp(len(envelope))
            oscillators = [frequency] if timbre.detune == 0 else [frequency, frequency * (1 + timbre.detune)]
            sound = np.zeros(len(envelope), dtype=np.float32)
            for hz in oscillators:
                # uint32 phase accumulator: wraps modulo one cycle for free; its top bits index the table
                index = (ramp * np.uint32(round(hz / rate * 2**32) % 2**32)) >> np.uint32(32 - WAVETABLE_BITS)
                if bright is None:
                    sound += both[index]
                else:
                    sound += fundamental[index] * envelope + upper[index] * bright
            if bright is None:
                sound *= envelope
            if len(oscillators) > 1:
                sound *= np.float32(1.0 / len(oscillators))
            self._sounds[key] = sound
        return self._sounds[key]

    def sound(self, timbre_name: str, midis: tuple[int, ...], gate: int) -> np.ndarray:
        """The waveform of `midis` (one note or a chord) played by `timbre_name`, held `gate` samples."""
        key = (timbre_name, midis, gate)
        if key not in self._sounds:
            if len(midis) == 1:
                return self._tone(timbre_name, midis[0], gate)
            self._sounds[key] = sum(self._tone(timbre_name, midi, gate) for midi in midis)
        return self._sounds[key]

    def add(self, sound: np.ndarray, start: int, gain: float) -> None:
        """Mixes `sound` into the clip at sample `start` (may be negative or run past the end: it is cut)."""
        begin, end = max(start, 0), min(start + len(sound), len(self.out))
        if begin < end:
            self.out[begin:end] += np.float32(gain) * sound[begin - start : end - start]


@lru_cache(maxsize=8)
def _drum_sounds(sampling_rate: int) -> dict[str, np.ndarray]:
    """One fixed sample per drum at `sampling_rate`: pitch-swept sine kick, noise snare, clap, hats and ride."""
    rng = np.random.default_rng(20250218)  # fixed: the drum kit is part of the generator, not of the clip seed
    rate = sampling_rate

    def time(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * rate)) / rate

    def noise(seconds: float) -> np.ndarray:
        return rng.standard_normal(int(seconds * rate))

    def smooth(x: np.ndarray, width: int) -> np.ndarray:  # crude low-pass: moving average
        return np.convolve(x, np.ones(width) / width, mode="same")

    t = time(0.35)
    kick_hz = 45 + 120 * np.exp(-t / 0.025)  # the pitch drop that makes a kick
    kick = np.sin(2 * np.pi * np.cumsum(kick_hz) / rate) * np.exp(-t / 0.12)
    kick[: int(0.003 * rate)] += 0.5 * noise(0.003)

    t = time(0.2)
    snare = 0.8 * np.diff(noise(0.2), prepend=0) * np.exp(-t / 0.05) + 0.6 * np.sin(2 * np.pi * 185 * t) * np.exp(
        -t / 0.04
    )

    t = time(0.25)
    # a clap is a few hand claps 10 ms apart; the last one rings longest
    claps = ((0.0, 0.012), (0.01, 0.012), (0.02, 0.07))  # (onset, decay) in seconds
    bursts = sum(np.where(t >= delay, np.exp(-(t - delay) / decay), 0) for delay, decay in claps)
    clap = smooth(np.diff(noise(0.25), prepend=0), 3) * bursts

    def hat(seconds: float, decay: float) -> np.ndarray:
        t = time(seconds)
        return np.diff(np.diff(noise(seconds), prepend=0), prepend=0) * np.exp(-t / decay)

    t = time(0.9)
    partials = [hz for hz in (2950.0, 3470.0, 4230.0, 5170.0, 6090.0) if hz < NYQUIST_MARGIN * rate]
    ride = (sum(np.sin(2 * np.pi * hz * t) for hz in partials) / max(1, len(partials)) + 0.3 * hat(0.9, 1.0)) * np.exp(
        -t / 0.35
    )

    sounds = {
        "kick": kick,
        "snare": snare,
        "clap": clap,
        "hat_closed": hat(0.06, 0.012),
        "hat_open": hat(0.3, 0.08),
        "ride": ride,
    }
    return {name: (0.9 * x / np.abs(x).max()).astype(np.float32) for name, x in sounds.items()}


def _swing(beat: float) -> float:
    """Swung eighths: an off-beat eighth moves to the last third of its beat."""
    return beat + 1 / 6 if abs(beat % 1 - 0.5) < 1e-6 else beat


class _Harmony:
    """Pitch bookkeeping of one key: scale degrees and chord tones as MIDI notes."""

    def __init__(self, tonic: int, minor: bool, sevenths: bool):
        self.tonic, self.minor, self.sevenths = tonic, minor, sevenths
        self.scale = NATURAL_MINOR_SCALE if minor else MAJOR_SCALE

    def semitones(self, position: int, chord_degree: int) -> int:
        """Semitones above the tonic of scale `position` (degree + 7 * octave), sounding over `chord_degree`."""
        octave, degree = divmod(position, 7)
        offset = self.scale[degree]
        if self.minor and degree == 6 and chord_degree in RAISED_SEVENTH_DEGREES:
            offset += 1
        return 12 * octave + offset

    def chord_positions(self, chord_degree: int) -> list[int]:
        """Scale positions of the chord on `chord_degree`: root, third, fifth (and seventh, except on the tonic,
        whose major seventh would pull the ear towards the dominant key)."""
        with_seventh = self.sevenths and chord_degree != 0
        return [chord_degree + step for step in ((0, 2, 4, 6) if with_seventh else (0, 2, 4))]

    def chord_pitch_classes(self, chord_degree: int) -> list[int]:
        return [(self.tonic + self.semitones(p, chord_degree)) % 12 for p in self.chord_positions(chord_degree)]

    def midi(self, position: int, chord_degree: int, low: int) -> int:
        """MIDI note of scale `position` with the melody register's base `low` (the tonic at or above `low - 6`)."""
        base = low - 6 + (self.tonic - (low - 6)) % 12
        return base + self.semitones(position, chord_degree)


def _place(pitch_class: int, low: int) -> int:
    """The lowest MIDI note of `pitch_class` at or above `low`."""
    return low + (pitch_class - low) % 12


def _draw_labels(rng: np.random.Generator, key: Any, tempo: Any, style: Any) -> tuple[int, float, int]:
    """Draws (key index, tempo, style index), then applies the overrides; the draws always happen, so an override
    changes only what it names."""
    style_index = int(rng.integers(len(STYLES)))
    if style is not None:
        style_index = _check_choice(style, STYLES, "style")
    key_index = int(rng.integers(len(KEYS)))
    if key is not None:
        key_index = _check_choice(key, KEYS, "key")
    low, high = STYLE_SPECS[STYLES[style_index]].tempo_range
    drawn_tempo = round(float(rng.uniform(low, high)), 1)
    if tempo is not None:
        if not isinstance(tempo, (int, float, np.integer, np.floating)) or not MIN_TEMPO <= tempo <= MAX_TEMPO:
            raise ValueError(f"tempo={tempo!r} must be a number of beats per minute in [{MIN_TEMPO}, {MAX_TEMPO}].")
        drawn_tempo = float(tempo)
    return key_index, drawn_tempo, style_index


class _Score:
    """Writes the parts of one clip onto a beat grid and plays them into a `_Renderer`.

    Beats are quarter notes counted from the first downbeat; the clip starts `start_beat` beats in, so its
    downbeats are not always at sample 0. Chords change every `harmonic_rhythm` beats, cycling `progression`.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        spec: Style,
        harmony: _Harmony,
        progression: tuple[int, ...],
        bpm: float,
        duration: float,
        sampling_rate: int,
    ):
        self.rng, self.spec, self.harmony, self.progression = rng, spec, harmony, progression
        self.harmonic_rhythm = 4 if bpm >= 100 else 2  # beats per chord: slow pieces change chords every half bar
        self.samples_per_beat = 60.0 * sampling_rate / bpm
        self.start_beat = float(rng.uniform(0, BEATS_PER_BAR))
        self.num_bars = int(math.ceil((duration * bpm / 60 + self.start_beat) / BEATS_PER_BAR)) + 1
        self.num_beats = self.num_bars * BEATS_PER_BAR
        self.renderer = _Renderer(int(round(duration * sampling_rate)), sampling_rate)

    def chord_at(self, beat: float) -> int:
        """Scale degree of the chord sounding at `beat`."""
        return self.progression[int(beat // self.harmonic_rhythm) % len(self.progression)]

    def chord_starts(self) -> range:
        return range(0, self.num_beats, self.harmonic_rhythm)

    def sample_at(self, beat: float) -> int:
        return int(round((beat - self.start_beat) * self.samples_per_beat))

    def play(self, timbre: str, midis: tuple[int, ...], beat: float, beats: float, gain: float) -> None:
        """Plays `midis` (a note or a chord) on `timbre` from `beat`, held `beats` beats."""
        gate = max(1, int(beats * self.samples_per_beat))
        self.renderer.add(self.renderer.sound(timbre, midis, gate), self.sample_at(beat), gain)

    def melody(self, timbre: str, gain: float) -> None:
        """A bar-by-bar rhythm; chord tones on strong beats (the tonic on the tonic chord's downbeats, so melodies
        come home to it), steps along the scale in between."""
        spec, harmony = self.spec, self.harmony
        rhythm_choices = self.rng.integers(len(spec.melody_rhythms), size=self.num_bars)
        notes: list[tuple[float, float]] = []  # (onset, length) in beats
        for bar, choice in enumerate(rhythm_choices):
            beat = bar * BEATS_PER_BAR
            for length in spec.melody_rhythms[choice]:
                if length > 0:
                    notes.append((beat, length))
                beat += abs(length)
        steps = self.rng.choice((-2, -1, -1, 0, 1, 1, 2), size=len(notes))
        picks = self.rng.integers(2, size=len(notes))
        velocities = self.rng.uniform(0.7, 1.0, size=len(notes))
        position = 7  # scale position of the previous note: the tonic an octave up
        for (beat, length), step, pick, velocity in zip(notes, steps, picks, velocities):
            chord = self.chord_at(beat)
            if beat % 2 == 0:  # strong beat: one of the two chord tones nearest the previous note
                tones = (0,) if chord == 0 and beat % BEATS_PER_BAR == 0 else harmony.chord_positions(chord)[:3]
                candidates = sorted(
                    (abs(p + 7 * octave - position), p + 7 * octave) for p in tones for octave in (-1, 0, 1, 2)
                )
                position = candidates[pick][1]
            else:
                position += int(step)
            position = min(max(position, 2), 14)  # keep it in a two-octave register
            onset = _swing(beat) if spec.swing else beat
            self.play(timbre, (harmony.midi(position, chord, MELODY_LOW),), onset, 0.9 * length, gain * velocity)

    def accompaniment(self, figure: str, timbre: str, gain: float) -> None:
        """Chords in close position above `CHORD_LOW`, played as `figure` (see `Style`)."""
        accents = self.rng.uniform(0.75, 1.0, size=2 * self.num_beats)  # per eighth note
        rhythm = self.harmonic_rhythm
        for chord_start in self.chord_starts():
            pitch_classes = self.harmony.chord_pitch_classes(self.chord_at(chord_start))
            voicing = tuple(sorted(_place(pc, CHORD_LOW) for pc in pitch_classes))
            eighths = [chord_start + eighth / 2 for eighth in range(2 * rhythm)]
            if figure == "pad":
                self.play(timbre, voicing, chord_start, rhythm, gain)
            elif figure in ("alberti", "arpeggio"):
                if figure == "alberti":  # low, high, middle, high
                    order = (voicing[0], voicing[-1], voicing[1], voicing[-1])
                else:  # up through two octaves
                    order = voicing + tuple(midi + 12 for midi in voicing)
                for eighth, beat in enumerate(eighths):
                    self.play(timbre, (order[eighth % len(order)],), beat, 0.5, 1.6 * gain * accents[int(2 * beat)])
            elif figure == "comp":  # short chords on 1, the "and" of 2, and 4
                for beat in (chord_start + offset for offset in (0, 1.5, 3) if offset < rhythm):
                    self.play(timbre, voicing, _swing(beat), 0.4, gain * accents[int(2 * beat)])
            elif figure == "strum":  # down-beats loud, off-beats soft
                for eighth, beat in enumerate(eighths):
                    level = 1.0 if eighth % 2 == 0 else 0.45
                    self.play(timbre, voicing, beat, 0.45, gain * level * accents[int(2 * beat)])
            elif figure == "stabs":
                for beat in eighths[1::2]:
                    self.play(timbre, voicing, beat, 0.3, gain * accents[int(2 * beat)])

    def bass(self, timbre: str, gain: float) -> None:
        """A bass line on the chord roots, played as the style's `bass_figure` (see `Style`)."""
        harmony, figure, rhythm = self.harmony, self.spec.bass_figure, self.harmonic_rhythm
        walk = self.rng.integers(3, size=self.num_beats)
        for chord_start in self.chord_starts():
            chord, next_chord = self.chord_at(chord_start), self.chord_at(chord_start + rhythm)
            pitch_classes = harmony.chord_pitch_classes(chord)
            root = _place(pitch_classes[0], BASS_LOW)
            if figure == "sustain":
                self.play(timbre, (root,), chord_start, rhythm, 0.8 * gain)
            elif figure == "half":  # root, then fifth
                fifth = _place(pitch_classes[2], root)
                for offset in range(0, rhythm, 2):
                    self.play(timbre, (root if offset == 0 else fifth,), chord_start + offset, 1.9, gain)
            elif figure == "walking":  # root, chord tones, then the scale step above or below the next root
                next_root = _place(harmony.chord_pitch_classes(next_chord)[0], BASS_LOW)
                for offset in range(rhythm):
                    beat = chord_start + offset
                    if offset == 0:
                        midi = root
                    elif offset == rhythm - 1:
                        step = harmony.semitones(next_chord + (1 if walk[beat] else -1), chord)
                        midi = _place((harmony.tonic + step) % 12, next_root - 5)
                    else:
                        midi = _place(pitch_classes[walk[beat] % len(pitch_classes)], root)
                    self.play(timbre, (midi,), beat, 0.95, gain)
            elif figure == "eighths":  # root eighths, sometimes an octave jump at the end
                for eighth in range(2 * rhythm):
                    midi = root + 12 if eighth == 2 * rhythm - 1 and walk[chord_start] == 0 else root
                    level = 1.0 if eighth % 2 == 0 else 0.6
                    self.play(timbre, (midi,), chord_start + eighth / 2, 0.45, gain * level)
            elif figure == "offbeat":
                for offset in range(rhythm):
                    self.play(timbre, (root,), chord_start + offset + 0.5, 0.4, gain)

    def drums(self, pattern: str, sampling_rate: int, gain: float) -> None:
        """The drum `pattern` (see `DRUM_PATTERNS`) in every bar, each hit's level slightly varied."""
        sounds, hits = _drum_sounds(sampling_rate), DRUM_PATTERNS[pattern]
        levels = self.rng.uniform(0.85, 1.0, size=(self.num_bars, len(hits)))
        for bar in range(self.num_bars):
            for (drum, onset, level), variation in zip(hits, levels[bar]):
                beat = bar * BEATS_PER_BAR + (_swing(onset) if self.spec.swing else onset)
                self.renderer.add(sounds[drum], self.sample_at(beat), gain * level * variation)


def generate_clip(
    seed: int | Sequence[int],
    duration: float = 10.0,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    key: str | int | None = None,
    tempo: float | None = None,
    style: str | int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Generates one labelled music clip.

    Args:
        seed: seed of `numpy.random.default_rng`: an int, or a sequence of ints (`[seed, i]` is clip `i` of
            `synthetic_music_dataset(n, seed)`). The same seed gives the same clip, bit for bit.
        duration: length in seconds.
        sampling_rate: samples per second (at least 8000).
        key: force the key (a name from `KEYS` or its index); drawn from the seed otherwise.
        tempo: force the tempo in beats (quarter notes) per minute, in [30, 300]; otherwise drawn from the style's
            range (rounded to 0.1 BPM).
        style: force the style (a name from `STYLES` or its index).
        What is not forced is drawn as without the override: forcing the key transposes the clip, forcing the
        tempo keeps its key, style, progression and instruments.

    Returns:
        `(audio, labels)`: `audio` float32 `(round(duration * sampling_rate),)` with peak `PEAK_LEVEL`; `labels` a
        dict with "key" (name), "key_index" (into `KEYS`), "tempo" (BPM), "instruments" (names in `INSTRUMENTS`
        order), "style" (name) and "style_index" (into `STYLES`).
    """
    _check_positive(duration, "duration")
    if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate < 8000:
        raise ValueError(f"sampling_rate must be an integer number of Hz >= 8000, got {sampling_rate!r}.")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"seed={seed!r} is not a valid numpy seed (a non-negative int or a list of them): {error}"
        ) from None
    key_index, bpm, style_index = _draw_labels(rng, key, tempo, style)
    spec = STYLE_SPECS[STYLES[style_index]]
    harmony = _Harmony(tonic=key_index // 2, minor=key_index % 2 == 1, sevenths=spec.sevenths)

    # Clip-level choices come before anything whose count depends on the tempo, so forcing it leaves them alone.
    progressions = MINOR_PROGRESSIONS if harmony.minor else MAJOR_PROGRESSIONS
    progression = progressions[int(rng.integers(len(progressions)))]
    melody_timbre = spec.melody[int(rng.integers(len(spec.melody)))]
    accompaniment_timbres = [palette[int(rng.integers(len(palette)))] for _, palette in spec.accompaniment]
    bass_timbre = spec.bass[int(rng.integers(len(spec.bass)))]
    parts = ("melody", "accompaniment", "bass", "drums")
    levels = rng.uniform(0.8, 1.2, size=4) * [PART_GAINS[part] for part in parts]  # this clip's mix

    score = _Score(rng, spec, harmony, progression, bpm, duration, sampling_rate)
    score.melody(melody_timbre, levels[0])
    for part, ((figure, _), timbre) in enumerate(zip(spec.accompaniment, accompaniment_timbres)):
        score.accompaniment(figure, timbre, levels[1] * (0.7 if part else 1.0))  # a second part sits behind
    score.bass(bass_timbre, levels[2])
    if spec.drums is not None:
        score.drums(spec.drums, sampling_rate, levels[3])

    audio = score.renderer.out
    peak = float(np.abs(audio).max())
    if peak > 0:
        audio *= np.float32(PEAK_LEVEL / peak)
    instruments = {melody_timbre, bass_timbre, *accompaniment_timbres} | ({"drums"} if spec.drums else set())
    labels = {
        "key": KEYS[key_index],
        "key_index": key_index,
        "tempo": bpm,
        "instruments": [name for name in INSTRUMENTS if name in instruments],
        "style": STYLES[style_index],
        "style_index": style_index,
    }
    return audio, labels


def render_note(
    instrument: str, midi: int, duration: float = 1.0, sampling_rate: int = DEFAULT_SAMPLING_RATE
) -> np.ndarray:
    """One note of a pitched instrument, as the generator plays it: float32 `(duration * rate + release,)`.

    Args:
        instrument: a pitched name from `INSTRUMENTS` (every one but "drums").
        midi: MIDI note number (69 is A4, 440 Hz).
        duration: seconds the note is held, before its release (percussive timbres die away sooner).
        sampling_rate: samples per second.
    """
    if instrument not in TIMBRES:
        raise ValueError(f"instrument={instrument!r} is not a pitched instrument; choose one of {sorted(TIMBRES)}.")
    _check_positive(duration, "duration")
    renderer = _Renderer(0, int(sampling_rate))
    return renderer.sound(instrument, (int(midi),), max(1, int(duration * sampling_rate))).copy()


def dataset_features() -> "datasets.Features":  # noqa: F821
    """The `datasets.Features` of `synthetic_music_dataset`."""
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "audio": {"array": datasets.List(datasets.Value("float32")), "sampling_rate": datasets.Value("int32")},
            "key": datasets.ClassLabel(names=KEYS),
            "tempo": datasets.Value("float32"),
            "instruments": datasets.List(datasets.ClassLabel(names=INSTRUMENTS)),
            "style": datasets.ClassLabel(names=STYLES),
        }
    )


def _check_num_clips(num_clips: Any) -> None:
    if not isinstance(num_clips, (int, np.integer)) or isinstance(num_clips, bool) or num_clips < 1:
        raise ValueError(f"num_clips must be a positive integer, got {num_clips!r}.")


def _check_seed(seed: Any) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")


def _clips_table(indices: range, seed: int, duration: float, sampling_rate: int) -> "pyarrow.Table":  # noqa: F821
    """Rows `indices` of `synthetic_music_dataset` as one Arrow table (built from numpy, no Python lists)."""
    import pyarrow as pa

    clips = [generate_clip([seed, index], duration=duration, sampling_rate=sampling_rate) for index in indices]
    lengths = [len(audio) for audio, _ in clips]
    audio = pa.StructArray.from_arrays(
        [
            pa.ListArray.from_arrays(
                pa.array(np.concatenate([[0], np.cumsum(lengths)]), type=pa.int32()),
                pa.array(np.concatenate([audio for audio, _ in clips])),
            ),
            pa.array([sampling_rate] * len(clips), type=pa.int32()),
        ],
        names=["array", "sampling_rate"],
    )
    columns = {
        "id": pa.array([f"synthetic-{seed}-{index:06d}" for index in indices]),
        "audio": audio,
        "key": pa.array([labels["key_index"] for _, labels in clips], type=pa.int64()),
        "tempo": pa.array([labels["tempo"] for _, labels in clips], type=pa.float32()),
        "instruments": pa.array(
            [[INSTRUMENTS.index(name) for name in labels["instruments"]] for _, labels in clips],
            type=pa.list_(pa.int64()),
        ),
        "style": pa.array([labels["style_index"] for _, labels in clips], type=pa.int64()),
    }
    return pa.Table.from_pydict(columns, schema=dataset_features().arrow_schema)


def _write_shard(path: str, indices: range, seed: int, duration: float, sampling_rate: int, batch_size: int) -> str:
    """Writes rows `indices` to the Arrow stream file `path` (the format `datasets` memory-maps), batch by batch."""
    import pyarrow as pa

    # Complete files only: an interrupted run leaves no half-written cache behind.
    with atomic_path(path) as partial, pa.OSFile(partial, "wb") as sink:
        with pa.ipc.new_stream(sink, dataset_features().arrow_schema) as writer:
            for start in range(indices.start, indices.stop, batch_size):
                batch = range(start, min(start + batch_size, indices.stop))
                writer.write_table(_clips_table(batch, seed, duration, sampling_rate))
    return path


def synthetic_music_dataset(
    num_clips: int,
    seed: int = 0,
    duration: float = 10.0,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    keep_in_memory: bool = False,
) -> "datasets.Dataset":  # noqa: F821
    """A `datasets.Dataset` of `num_clips` generated clips with their labels.

    Columns: "id" (str), "audio" (`{"array": float32 list, "sampling_rate": int}`, a plain struct: no decoding),
    "key" (`ClassLabel(KEYS)`), "tempo" (float32 BPM), "instruments" (list of `ClassLabel(INSTRUMENTS)`), "style"
    (`ClassLabel(STYLES)`). Row `i` is `generate_clip([seed, i], duration, sampling_rate)`, so it depends only on
    `(seed, i)`. Rows are written to Arrow files under `cache_dir` a few at a time, so memory stays small, and a
    second call with the same arguments reuses them. Use `.with_format("numpy")` to read the audio as arrays.

    Args:
        num_clips: number of rows.
        seed: base seed (non-negative int).
        duration: seconds per clip.
        sampling_rate: samples per second.
        cache_dir: folder for the Arrow files; defaults to `<datasets cache>/myna_synthetic`.
        num_proc: generate with this many processes (contiguous shards of rows).
        keep_in_memory: load the result into memory instead of memory-mapping it.
    """
    import datasets

    _check_num_clips(num_clips)
    _check_seed(seed)
    _check_positive(duration, "duration")
    if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate < 8000:
        raise ValueError(f"sampling_rate must be an integer number of Hz >= 8000, got {sampling_rate!r}.")
    num_proc = max(1, min(int(num_proc or 1), num_clips))
    if cache_dir is None:
        cache_dir = os.path.join(datasets.config.HF_DATASETS_CACHE, "myna_synthetic")
    os.makedirs(cache_dir, exist_ok=True)

    # Shards are named by what they hold, so a call with the same arguments finds them complete and reuses them.
    bounds = np.linspace(0, num_clips, num_proc + 1).astype(int)
    shards = [range(int(low), int(high)) for low, high in zip(bounds[:-1], bounds[1:])]
    name = f"v{_GENERATOR_VERSION}-seed{seed}-{duration:g}s-{sampling_rate}Hz"
    paths = [os.path.join(cache_dir, f"{name}-{shard.start:07d}-{shard.stop:07d}.arrow") for shard in shards]
    missing = [(path, shard) for path, shard in zip(paths, shards) if not os.path.exists(path)]
    # ~10 MB of 10 s clips at 16 kHz per written batch
    batch_size = max(1, int(16 * 10 * DEFAULT_SAMPLING_RATE / (duration * sampling_rate)))
    arguments = [(path, shard, int(seed), float(duration), int(sampling_rate), batch_size) for path, shard in missing]
    if len(arguments) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(len(arguments)) as pool:
            list(pool.map(_write_shard, *zip(*arguments)))
    elif arguments:
        _write_shard(*arguments[0])

    parts = [datasets.Dataset.from_file(path, in_memory=keep_in_memory) for path in paths]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def write_synthetic_folder(
    path: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    duration: float = 10.0,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    audio_format: str = "wav",
) -> str | os.PathLike:
    """Writes `num_clips` generated clips and their labels as an `audiofolder` dataset.

    Files `clip_000000.<audio_format>`, ... (clip `i` is `generate_clip([seed, i], ...)`, as in
    `synthetic_music_dataset`) and `metadata.csv` with columns `file_name`, `key` (name), `tempo` (BPM),
    `instruments` (names joined by ";") and `style`. Load it with `datasets.load_dataset("audiofolder",
    data_dir=path)` or read the files with `modeling_myna.audio_utils.load_audio`.

    Args:
        path: folder to write into (created if missing).
        num_clips: number of clips.
        seed: base seed (non-negative int).
        duration: seconds per clip.
        sampling_rate: samples per second.
        audio_format: "wav" and "flac" (16-bit PCM, lossless), "ogg" (Vorbis) or "mp3", all written by libsndfile.

    Returns:
        `path`.
    """
    import soundfile as sf

    _check_num_clips(num_clips)
    _check_seed(seed)
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio_format={audio_format!r} is not one of {sorted(AUDIO_FORMATS)}.")
    file_format, subtype = AUDIO_FORMATS[audio_format]
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metadata.csv"), "w", newline="", encoding="utf-8") as metadata:
        writer = csv.writer(metadata)
        writer.writerow(["file_name", "key", "tempo", "instruments", "style"])
        for index in range(num_clips):
            audio, labels = generate_clip([seed, index], duration=duration, sampling_rate=sampling_rate)
            file_name = f"clip_{index:06d}.{audio_format}"
            sf.write(os.path.join(path, file_name), audio, sampling_rate, format=file_format, subtype=subtype)
            writer.writerow(
                [file_name, labels["key"], labels["tempo"], ";".join(labels["instruments"]), labels["style"]]
            )
    return path


__all__ = [
    "INSTRUMENTS",
    "KEYS",
    "STYLES",
    "TIMBRES",
    "STYLE_SPECS",
    "Timbre",
    "Style",
    "dataset_features",
    "generate_clip",
    "render_note",
    "synthetic_music_dataset",
    "write_synthetic_folder",
]
