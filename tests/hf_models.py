"""Tiny Hugging Face speech models with random weights, for the tests and the benchmarks (no hub)."""

from __future__ import annotations

from typing import Any


def whisper_config(width: int, layers: int, heads: int, ffn: int) -> Any:
    """A WhisperConfig of ``layers`` encoder layers ``width`` wide (80 mel bins and 30 s windows as the real
    ones); a one-layer decoder with a vocabulary of 8, which the encoder never uses."""
    from transformers import WhisperConfig

    return WhisperConfig(
        d_model=width,
        encoder_layers=layers,
        decoder_layers=1,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        num_mel_bins=80,
        vocab_size=8,
        max_target_positions=8,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        decoder_start_token_id=3,
    )
