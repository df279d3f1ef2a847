"""How ``vafusion faces`` finds, follows and crops faces (:class:`FacesOptions`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vafusion.bounds import bound, require_bounds


@dataclass
class FacesOptions:
    """Everything that changes the crops is recorded with each video (``faces/<video>.json``), so a rerun
    with other settings is told instead of mixing two kinds of crops."""

    detector: str = "mtcnn"
    detector_options: Mapping[str, str] = field(default_factory=dict)
    size: int = field(default=112, metadata=bound(16, 1024))
    margin: float = field(default=0.0, metadata=bound(0, 2))
    persons: int = field(default=1, metadata=bound(1, 2))
    detect_every: int = field(default=1, metadata=bound(1, 100))
    batch_size: int = field(default=16, metadata=bound(1))
    max_gap: int | None = field(default=None, metadata=bound(1, optional=True))  # None: 2 x detect_every
    preview: bool = False
    device: str = "auto"
    shard: tuple[int, int] = (1, 1)
    jpeg_quality: int = field(default=95, metadata=bound(50, 100))
    progress: bool = True

    def __post_init__(self) -> None:
        require_bounds(self, "faces options")

    @property
    def gap(self) -> int:
        """Frames a track may go unseen and still continue."""
        return self.max_gap if self.max_gap is not None else 2 * self.detect_every

    def settings(self, detector: Mapping[str, Any]) -> dict[str, Any]:
        """What the crops depend on (the detector's provenance included): recorded, and compared on a rerun."""
        return {
            "detector": dict(detector),
            "size": self.size,
            "margin": self.margin,
            "persons": self.persons,
            "detect_every": self.detect_every,
            "max_gap": self.gap,
        }
