"""Audio constants of Whisper's front end (no torch, so every layer can use them)."""

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_SAMPLES = 160  # 10 ms per mel frame
WINDOW_S = 30
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE
WINDOW_FRAMES = WINDOW_SAMPLES // HOP_SAMPLES  # 3000 mel frames per encoder window
FRAMES_PER_S = SAMPLE_RATE // HOP_SAMPLES
