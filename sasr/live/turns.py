"""Turn detection for protocols that cut a live session into items (OpenAI Realtime's `server_vad`):
where each spoken stretch starts and ends, from the session's per-frame speech probabilities. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from sasr.audio.constants import SAMPLE_RATE
from sasr.live.commit import MIN_SPEECH_S, SpeechTracker

HYSTERESIS = 0.15  # a turn goes on while frames stay this little below its threshold


@dataclass(frozen=True)
class TurnDetection:
    threshold: float = 0.5  # speech probability that starts a turn
    prefix_padding_ms: int = 300  # audio before the detected onset that belongs to the turn
    silence_duration_ms: int = 500  # silence that ends it


@dataclass(frozen=True)
class TurnEvent:
    started: bool  # True: a turn began (at `sample`); False: it ended (its speech ended at `sample`)
    sample: int  # position on the turn detector's clock


class Turns:
    """Frame by frame, like the live policies: a turn is reported once it has MIN_SPEECH_S of speech (so
    a click is never an item) and ends after silence_duration_ms without speech."""

    def __init__(self, config: TurnDetection, first_frame: int = 0) -> None:
        self.config = config
        on = config.threshold
        self.tracker = SpeechTracker(config.silence_duration_ms / 1000, on=on, off=max(0.0, on - HYSTERESIS))
        self.tracker.num_frames = first_frame  # the session's frame clock
        self.reported = False  # the current turn's start has been reported

    def step(self, prob: float) -> TurnEvent | None:
        was_in_speech = self.tracker.in_speech
        self.tracker.step(prob)
        tracker = self.tracker
        if tracker.in_speech and not self.reported and tracker.last_voiced - tracker.start >= MIN_SPEECH_S * SAMPLE_RATE:
            self.reported = True
            padding = round(self.config.prefix_padding_ms * SAMPLE_RATE / 1000)
            return TurnEvent(True, max(0, tracker.start - padding))
        if was_in_speech and not tracker.in_speech and self.reported:
            self.reported = False
            return TurnEvent(False, tracker.last_voiced)
        if not tracker.in_speech:
            self.reported = False  # a burst too short to count
        return None
