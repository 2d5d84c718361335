"""Speech fixtures with known text: espeak-ng speaks them, sox converts them.

The texts are Harvard sentences (IEEE 1969), phonetically balanced and in the public domain.

SASR_SPEECH_DIR names a directory of spoken fixtures kept by `speak` (one file per text and
settings): it is filled where espeak-ng is, and read where it is not (a GPU machine without it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

HARVARD = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
]

# Real human speech: the channel-test recordings Debian's alsa-utils ships (one speaker each).
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
ALSA_TEXTS = {
    "Front_Center.wav": "front center",
    "Front_Left.wav": "front left",
    "Front_Right.wav": "front right",
    "Rear_Center.wav": "rear center",
    "Rear_Left.wav": "rear left",
    "Rear_Right.wav": "rear right",
    "Side_Left.wav": "side left",
    "Side_Right.wav": "side right",
}


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is needed to make speech fixtures: apt-get install espeak-ng sox alsa-utils")
    return path


def speak(text: str, path: Path, rate: int = 16000, channels: int = 1, speed: int = 160, voice: str = "en") -> Path:
    """Write `text` spoken by espeak-ng to `path` (format from its suffix) at `rate` Hz."""
    kept = None
    if os.environ.get("SASR_SPEECH_DIR"):
        key = hashlib.sha256(repr((text, rate, channels, speed, voice)).encode()).hexdigest()[:16]
        kept = Path(os.environ["SASR_SPEECH_DIR"]) / f"{key}{path.suffix}"
        if kept.exists():
            shutil.copyfile(kept, path)
            return path
    raw = path.with_suffix(".espeak.wav")
    subprocess.run([require("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run([require("sox"), "-q", "-D", "-G", str(raw), "-r", str(rate), "-c", str(channels), str(path)], check=True)
    raw.unlink()
    if kept:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, kept)
    return path


def corpus(directory: Path, num_files: int = 8, sentences_per_file: int = 7) -> list[tuple[Path, str]]:
    """Speech files of about 20 s with their texts: different sentences, voices and speeds per file."""
    voices = [("en-us", 160), ("en", 150), ("en-gb-x-rp", 170), ("en-us", 140)]
    files = []
    for i in range(num_files):
        texts = [HARVARD[(i * 4 + j) % len(HARVARD)] for j in range(sentences_per_file)]
        voice, speed = voices[i % len(voices)]
        path = directory / f"speech{i}.wav"
        if not path.exists():
            parts = [read16k(speak(t, directory / f"part{i}_{j}.wav", voice=voice, speed=speed)) for j, t in enumerate(texts)]
            sf.write(path, concat(parts), 16000)
        files.append((path, " ".join(texts)))
    return files


def read16k(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1, (rate, audio.shape)
    return audio


def concat(parts: list[np.ndarray], gap_s: float = 0.4, rate: int = 16000) -> np.ndarray:
    gap = np.zeros(int(gap_s * rate), np.float32)
    return np.concatenate([x for p in parts for x in (p, gap)])
