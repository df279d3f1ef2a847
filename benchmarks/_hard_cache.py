"""A feature cache whose labels need temporal lag and cross-modal interaction (benchmarks only).

Why written straight as a cache: the benchmark needs >= 30k training frames at the real dims
(resnet50 2048, VGGish 128, log-mel 64); generating and extracting that many frames of video
would take most of an hour on a 2-core CPU and would test extraction, not training. The cache
goes through the real writer API (``write_corpus_index`` + ``FeatureWriter``), so the trainer
reads exactly what ``vafusion extract`` leaves.

What makes it hard (every signal lives in the features, none in names or metadata):

- **Temporal lag**: valence(t) = the face's "smile" s(t - 0.6 s): the visual feature shows the
  cause 0.6 s before the label (15 frames at 25 fps, 18 at 30), so a model must look back.
- **Cross-modal interaction**: arousal(t) = sign(t) * loudness(t): the sign is on the face
  (a slowly switching +-1 expression), the magnitude in the voice; neither stream alone can
  predict it, and no sum of the two can (it is a product).
- Nuisances: per-video identity offsets, head pose and illumination drift in the visual
  feature; microphone gain, pitch and background noise in the audio; Gaussian noise on
  every feature; face-absent runs (mask False, the label continues), one video without
  audio, short unlabelled runs (NaN) in the labels.

Features are post-ReLU like a CNN's pooled embedding (visual, VGGish) or log-energies (log-mel),
made by fixed random maps from the latent signals, float16 as the cache stores them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAG_SECONDS = 0.6
DIMS = {"resnet50": 2048, "vggish": 128, "logmel": 64}


def _curve(rng: np.random.Generator, t: np.ndarray, slow: float = 1.0) -> np.ndarray:
    """tanh of three slow sinusoids plus an offset: smooth, in (-1, 1), different per call."""
    freqs = rng.uniform(0.05, 0.35, 3) * slow
    amps = rng.uniform(0.4, 0.8, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    x = rng.normal(0, 0.3) + (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
    return np.tanh(x)


def _runs(rng: np.random.Generator, n: int, count: int, low: int, high: int) -> np.ndarray:
    """A bool mask with ``count`` runs of ``low..high`` True frames."""
    mask = np.zeros(n, bool)
    for _ in range(count):
        a = int(rng.integers(0, max(1, n - low)))
        mask[a : a + int(rng.integers(low, high + 1))] = True
    return mask


def _video(rng: np.random.Generator, maps: dict, n: int, fps: float, has_audio: bool) -> tuple[np.ndarray, dict]:
    """Labels (n, 2) and per feature (rows float16, mask) of one video."""
    lag = LAG_SECONDS * fps
    t = np.arange(n) / fps
    smile_at = _curve(rng, np.arange(-int(np.ceil(lag)) - 1, n) / fps)  # the face's smile, also before frame 0
    smile = smile_at[int(np.ceil(lag)) + 1 :]
    sign = np.tanh(4.0 * _curve(rng, t, slow=0.5))  # a slowly switching +-1 expression
    loud = 0.5 * (1.0 + _curve(rng, t))  # voice loudness in (0, 1)
    pauses = _runs(rng, n, max(1, n // 400), 10, 40)
    loud = np.where(pauses, 0.0, loud)
    # valence(t) = smile(t - lag): linear interpolation between the frames around t - lag
    src = np.arange(n) - lag + int(np.ceil(lag)) + 1
    valence = np.interp(src, np.arange(smile_at.size), smile_at)
    arousal = sign * loud
    labels = np.stack([valence, arousal], 1).astype(np.float32)
    labels[_runs(rng, n, 2, 5, 30)] = np.nan
    identity = rng.normal(0, 1.0, 6)
    pose = np.stack([_curve(rng, t, 2.0), _curve(rng, t, 2.0), 0.5 + 0.3 * _curve(rng, t, 0.3)], 1)
    visual_latent = np.concatenate(
        [smile[:, None], sign[:, None], pose, np.broadcast_to(identity, (n, identity.size))], 1
    )
    gain, pitch = rng.normal(0, 0.5), _curve(rng, t, 1.5)
    noise_level = rng.uniform(0.02, 0.2)
    audio_latent = np.stack([loud * np.exp(gain), pitch * (loud > 0), np.full(n, noise_level), np.full(n, gain)], 1)
    face = ~_runs(rng, n, max(1, n // 500), 5, 60)
    audio = np.full(n, has_audio)
    rows = {
        "resnet50": np.maximum(visual_latent @ maps["resnet50"] + rng.normal(0, 0.6, (n, DIMS["resnet50"])), 0),
        "vggish": np.maximum(audio_latent @ maps["vggish"] + rng.normal(0, 0.5, (n, DIMS["vggish"])), 0),
        "logmel": np.log(
            0.01 + np.abs(audio_latent[:, :1] * maps["logmel"][0] + noise_level + rng.normal(0, 0.05, (n, 64)))
        ),
    }
    masks = {"resnet50": face, "vggish": audio, "logmel": audio}
    out = {}
    for name, x in rows.items():
        x = x.astype(np.float16)
        x[~masks[name]] = 0
        out[name] = (x, masks[name])
    return labels, out


def write_hard_cache(
    cache: Path, train_frames: int = 36_000, val_frames: int = 9_000, seed: int = 0, mean_length: int = 1200
) -> dict:
    """Write the cache into ``cache``; returns ``{"train_frames", "val_frames", "ids"}``.

    Videos of ``mean_length`` frames (+-50%), 25 or 30 fps, until each partition has its frames;
    the same seed gives the same cache.
    """
    from vafusion.cache.corpus_index import CorpusIndex, VideoEntry, write_corpus_index
    from vafusion.cache.writer import FeatureWriter

    rng = np.random.default_rng(seed)
    maps_rng = np.random.default_rng(seed + 1000)
    maps = {
        "resnet50": maps_rng.normal(0, 1.0, (11, DIMS["resnet50"])) * (maps_rng.random(DIMS["resnet50"]) < 0.5),
        "vggish": maps_rng.normal(0, 1.0, (4, DIMS["vggish"])),
        "logmel": np.abs(maps_rng.normal(0, 1.0, (1, DIMS["logmel"]))),
    }
    entries, videos = [], {}
    totals = {"train": 0, "validation": 0}
    wanted = {"train": train_frames, "validation": val_frames}
    k = 0
    while any(totals[p] < wanted[p] for p in totals):
        partition = "validation" if totals["validation"] < wanted["validation"] and k % 5 == 4 else "train"
        if totals[partition] >= wanted[partition]:
            partition = "validation" if partition == "train" else "train"
        n = int(rng.integers(mean_length // 2, mean_length * 3 // 2))
        fps = 30.0 if k % 2 else 25.0
        vid = f"hard{k:03d}"
        labels, feats = _video(rng, maps, n, fps, has_audio=k != 3)
        entries.append(VideoEntry(vid, fps, n, partition, vid, labels))
        videos[vid] = feats
        totals[partition] += n
        k += 1
    index = CorpusIndex(tuple(entries))
    write_corpus_index(cache, index, source="benchmarks/_hard_cache.py (lag + cross-modal product)")
    for name, dim in DIMS.items():
        writer = FeatureWriter(cache, name, dim, {"model": f"hard-{name}", "seed": seed}, index.fingerprint)
        for vid, feats in videos.items():
            writer.write(vid, *feats[name])
        writer.finalize()
    return {"train_frames": totals["train"], "val_frames": totals["validation"], "ids": [e.id for e in entries]}


if __name__ == "__main__":
    import sys

    print(write_hard_cache(Path(sys.argv[1])))
