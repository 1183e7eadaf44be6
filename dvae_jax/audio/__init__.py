"""Spectrogram <-> waveform and speech quality metrics."""
