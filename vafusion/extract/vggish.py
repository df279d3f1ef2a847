"""The ``vggish`` track feature: one AudioSet VGGish embedding per video frame.

* The network (:class:`VGGish`, :func:`load_vggish`) with the state_dict layout of the
  widely used PyTorch port, so published weight files load unchanged, and the published
  PCA/quantisation postprocessing (:class:`VGGishPCA`, option ``pca``).
* Frame k's example is the 0.96 s log-mel patch centred on its instant (k - 1) / fps
  (:func:`vggish_patch_indices`, through the shared aligner), cut from one log-mel of the
  whole track (:mod:`.logmel`) by index arithmetic.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from vafusion.device import autocast
from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.audio import SAMPLE_RATE
from vafusion.extract.logmel import LOG_MEL, frontend_params, log_mel_steps, track_log_mel
from vafusion.extract.registry import BuildRequest, Family
from vafusion.extract.weights import assign_state_dict, read_state_dict, torch_load_plain
from vafusion.hashing import sha256_file

logger = logging.getLogger(__name__)

PATCH_FRAMES = 96  # 0.96 s examples
EMBEDDING_SIZE = 128

RANDOM_SEED = 0
"""Seed of ``load_vggish("random")``: random weights, but the same ones every run."""

# ------------------------------------------------------------------ network ---

_VGG_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")


class VGGish(nn.Module):
    """The VGGish embedding network: ``(N, 1, 96, 64)`` log-mel patches -> ``(N, 128)``.

    Module names match the PyTorch port of the AudioSet release (``features.0``,
    ``features.3``, ... ``embeddings.4``), so its state_dicts load unchanged. The
    conv map is flattened in NHWC order, as the TensorFlow original did, because
    the first fully connected layer's weights were trained on that order. The
    final ReLU is kept, as in the release.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for v in _VGG_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).flatten(1)  # NHWC flatten: (N, 6 * 4 * 512)
        return self.embeddings(x)


def load_vggish(weights: str | Path) -> tuple[VGGish, dict]:
    """Build VGGish in eval mode with ``weights`` and describe where they came from.

    Args:
        weights: a state_dict file of the PyTorch port layout (e.g. the published
            ``vggish-10086976.pth``), or the literal ``"random"`` for seeded
            random weights (``RANDOM_SEED``; useful for tests and plumbing only).

    Returns:
        ``(model, provenance)`` with provenance ``{"model": "vggish", "weights":
        "random" | file name, "sha256": hex | None}`` for the cache's extractor record.

    Raises:
        VafusionError: the file is missing, unreadable, or is not a VGGish state_dict.
    """
    if isinstance(weights, str) and weights == "random":
        logger.warning("VGGish uses RANDOM weights (seed %d): features are not meaningful", RANDOM_SEED)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = VGGish()
        return model.eval(), {"model": "vggish", "weights": "random", "sha256": None}

    path = Path(weights)
    fix = "pass the PyTorch VGGish port's state_dict (vggish-10086976.pth: features.0 ... embeddings.4) or 'random'"
    state = read_state_dict(path, fix)
    with torch.device("meta"):  # shapes only: no 0.5 s random init of 72M parameters
        model = VGGish()
    assign_state_dict(model, state, path, "VGGish", fix)
    return model.eval(), {"model": "vggish", "weights": path.name, "sha256": sha256_file(path)}


class VGGishPCA:
    """The AudioSet release's embedding postprocessing: PCA whitening + 8-bit quantisation.

    ``q = round((clip(E @ (x - mu), -2, 2) + 2) * 255 / 4)``, computed in float64
    as the numpy reference does, returned as float32 values 0..255 so it stores
    in the cache like any other feature.
    """

    QUANTIZE_MIN = -2.0
    QUANTIZE_MAX = 2.0

    def __init__(self, eigen_vectors: np.ndarray, means: np.ndarray, provenance: dict | None = None) -> None:
        e = np.asarray(eigen_vectors, dtype=np.float64)
        m = np.asarray(means, dtype=np.float64).reshape(-1)
        if e.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or m.shape != (EMBEDDING_SIZE,):
            raise ValueError(f"PCA parameters must be (128, 128) and (128,), got {e.shape} and {m.shape}")
        self.eigen_vectors = torch.from_numpy(e)
        self.means = torch.from_numpy(m)
        self.provenance = provenance or {"pca": None, "pca_sha256": None}

    @classmethod
    def from_file(cls, path: Path | str) -> VGGishPCA:
        """Load ``vggish_pca_params.npz`` (numpy) or the PyTorch port's ``.pth`` dict.

        Both hold ``pca_eigen_vectors`` (128, 128) and ``pca_means`` (128,) (or (128, 1)).
        """
        path = Path(path)
        if not path.is_file():
            raise VafusionError(f"{path}: no such PCA parameter file; pass vggish_pca_params.npz or .pth")
        params: object
        try:
            if path.suffix.lower() == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    params = {k: z[k] for k in z.files}
            else:
                params = torch_load_plain(path)
        except Exception as exc:
            raise VafusionError(
                f"{path}: cannot read PCA parameters ({type(exc).__name__}); pass vggish_pca_params.npz or .pth"
            ) from exc
        if not isinstance(params, dict) or not {"pca_eigen_vectors", "pca_means"} <= set(params):
            keys = sorted(params)[:5] if isinstance(params, dict) else type(params).__name__
            raise VafusionError(
                f"{path}: expected keys pca_eigen_vectors and pca_means, found {keys}; pass the published PCA file"
            )

        def as_np(v: object) -> np.ndarray:
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        try:
            return cls(
                as_np(params["pca_eigen_vectors"]),
                as_np(params["pca_means"]),
                {"pca": path.name, "pca_sha256": sha256_file(path)},
            )
        except ValueError as exc:
            raise VafusionError(f"{path}: {exc}; pass the published VGGish PCA file") from exc

    def __call__(self, embeddings: Tensor) -> Tensor:
        """``(N, 128)`` raw VGGish embeddings -> ``(N, 128)`` float32 quantised values."""
        x = torch.as_tensor(embeddings).detach().to("cpu", torch.float64)
        pca = (x - self.means) @ self.eigen_vectors.T
        clipped = pca.clamp(self.QUANTIZE_MIN, self.QUANTIZE_MAX)
        scale = 255.0 / (self.QUANTIZE_MAX - self.QUANTIZE_MIN)
        return torch.round((clipped - self.QUANTIZE_MIN) * scale).float()


# -------------------------------------------------------- on the frame grid ---


def vggish_patch_indices(frame_times: np.ndarray, n_log_mel: int) -> Tensor:
    """``(T, 96)`` log-mel row indices of each video frame's VGGish patch.

    Convention: c is the log-mel frame whose centre (0.0125 + 0.010 c s) is nearest the
    frame's instant t (:func:`vafusion.extract.align.nearest_step`, ties to the later
    frame); the patch is log-mel frames c-48 .. c+47. So patch row 48 is frame c, whose
    centre is within 5 ms of t, and the patch's own midpoint (between rows 47 and 48) lies
    5 ms before row 48's centre, i.e. within 10 ms of t. An even-length patch cannot be
    centred better than half a hop; this choice keeps c itself the frame nearest t.
    Indices past either end of the track are clamped (edge padding).
    """
    c = align.nearest_step(log_mel_steps(max(n_log_mel, 1)), frame_times)
    idx = c[:, None] + np.arange(-PATCH_FRAMES // 2, PATCH_FRAMES // 2, dtype=np.int64)[None, :]
    np.clip(idx, 0, max(n_log_mel - 1, 0), out=idx)
    return torch.from_numpy(idx)


class PatchRows:
    """One video's VGGish inputs for the batched track pass, cut lazily from the track's log-mel.

    Patches are gathered only when a batch takes them, so memory holds one log-mel per
    pending track (100 rows/s) instead of 96 x 64 values per video frame.
    """

    def __init__(self, lm: Tensor, frame_times: np.ndarray) -> None:
        self.lm = track_log_mel(lm)  # a track shorter than one STFT window: silence
        self.idx = vggish_patch_indices(frame_times, self.lm.shape[0])

    def __len__(self) -> int:
        return len(self.idx)

    def take(self, start: int, stop: int) -> Tensor:
        """Patches of rows ``start:stop``, ``(n, 1, 96, 64)``."""
        return self.lm[self.idx[start:stop]].unsqueeze(1)


def vggish_patches(log_mel_frames: Tensor, frame_times: np.ndarray) -> Tensor:
    """One 0.96 s VGGish input patch per video frame, ``(T, 1, 96, 64)``, in one gather.

    Memory grows as 24 KiB per frame; extraction gathers batch by batch (:class:`PatchRows`,
    same indices). A track without a log-mel frame gives patches of digital silence.
    """
    rows = PatchRows(torch.as_tensor(log_mel_frames), frame_times)
    return rows.take(0, len(rows))


class VGGishExtractor:
    """``vggish``: one 128-d embedding per video frame, of the 0.96 s patch centred on it.

    Built-in hooks of the track pass: ``frontend`` (the log-mel, computed in a decoding
    worker and shared with ``logmel``), ``batch_rows``/``run_batch`` (patches of many
    tracks in one backbone batch).
    """

    kind: Literal["track"] = "track"
    name = "vggish"
    dim = EMBEDDING_SIZE
    sample_rate = SAMPLE_RATE
    frontend = LOG_MEL

    def __init__(self, model: VGGish, weights_provenance: dict, pca: VGGishPCA | None = None) -> None:
        self.model = model
        self.pca = pca
        self.device = torch.device("cpu")
        self._provenance = dict(
            weights_provenance,
            frontend=frontend_params(),
            postprocess=getattr(pca, "provenance", None),
            patch="0.96 s (96 log-mel frames) centred on each frame's instant, edge-padded",
            timing=align.GRID_TIMING,
        )

    def provenance(self) -> dict:
        return dict(self._provenance)

    def to(self, device: torch.device) -> VGGishExtractor:
        # channels_last: oneDNN's and cuDNN's fast convolution layout.
        self.model = self.model.to(device).eval()
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented; not in torch's stubs
        self.device = torch.device(device)
        return self

    def batch_rows(self, lm: Tensor, frame_times: np.ndarray) -> PatchRows:
        return PatchRows(lm, frame_times)

    def run_batch(self, patches: Tensor) -> Tensor:
        """``(B, 1, 96, 64)`` patches -> ``(B, 128)`` float32 on the CPU (PCA applied if set)."""
        x = patches.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            emb = self.model(x).float().cpu()
        return self.pca(emb) if self.pca is not None else emb

    def __call__(self, wave: Tensor, frame_times: np.ndarray) -> Tensor:
        rows = self.batch_rows(self.frontend(wave), frame_times)
        return self.run_batch(rows.take(0, len(rows)))


def _build(request: BuildRequest) -> VGGishExtractor:
    """The registry's builder: weights required (a file or ``random``), option ``pca``."""
    model, prov = load_vggish(_weights(request))
    pca = VGGishPCA.from_file(request.options["pca"]) if request.options.get("pca") else None
    return VGGishExtractor(model, prov, pca)


def _check(request: BuildRequest) -> None:
    _weights(request)


def _weights(request: BuildRequest) -> str:
    if request.weights == "default":
        raise VafusionError(
            "--weights vggish=default: VGGish weights are not downloaded by vafusion; pass the "
            "published vggish-10086976.pth as a PATH (see README, Pretrained weights) or random"
        )
    if not request.weights:
        raise VafusionError(
            "vggish needs weights: --vggish-weights PATH (the published vggish-10086976.pth, see README) "
            "or --vggish-weights random (or --weights vggish=PATH|random)"
        )
    return request.weights


FAMILY = Family(key="vggish", names=lambda: ("vggish",), build=_build, check=_check, options=("pca",))
