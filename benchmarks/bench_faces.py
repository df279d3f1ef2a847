"""``vafusion faces`` efficiency: end to end against the detector alone on the same frames (CPU).

End to end: :func:`vafusion.extract.faces.run.faces` on a generated clip of a real face (scikit-image's
astronaut moving, scaling and rolling; 640 x 360 by default, like many Aff-Wild2 videos): probing,
building the detector (weights read and hashed), decoding (twice: detect, then align), batched MTCNN
on every frame, linking, choosing the person, aligning and writing 112 px JPEG crops, the CSV and the
record. Baseline: the same detector object on the same frames already decoded in memory, in the same
batches. Interleaved (baseline before and after each end-to-end run), repeated, medians; the ratio of
frames/s is the result, target >= 0.8. Also reported: frames/s end to end with ``--detect-every 5``.

    python benchmarks/bench_faces.py [--frames 120] [--width 640] [--height 360] [--repeats 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import _common as C
import numpy as np
import torch

from vafusion.extract.faces.mtcnn import MTCNN
from vafusion.extract.faces.options import FacesOptions
from vafusion.extract.faces.run import faces
from vafusion.extract.media import video_frames
from vafusion.synth.face_video import face_clip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    C.header("vafusion faces: end to end against the MTCNN detector alone (CPU)")
    from skimage import data

    work = Path(tempfile.mkdtemp(prefix="bench-faces-"))
    try:
        clip = face_clip(
            work / "clip.mp4",
            data.astronaut()[20:230, 120:320],
            n_frames=args.frames,
            size=(args.width, args.height),
            width=args.height // 2,
        )
        frames = np.concatenate(list(video_frames(clip.path, args.batch_size)))
        detector = MTCNN().to(torch.device("cpu"))
        batches = [
            torch.from_numpy(frames[i : i + args.batch_size]).permute(0, 3, 1, 2)
            for i in range(0, len(frames), args.batch_size)
        ]

        def alone() -> None:
            for batch in batches:
                detector(batch)

        def end_to_end(every: int) -> None:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            opts = FacesOptions(device="cpu", batch_size=args.batch_size, detect_every=every, progress=False)
            report = faces([clip.path], out, opts)
            assert report.ok and report.written == ["clip"], report

        alone()  # warm-up
        base, e2e, sparse = [], [], []
        for _ in range(args.repeats):
            base.append(C.timed(alone))
            e2e.append(C.timed(lambda: end_to_end(1)))
            base.append(C.timed(alone))
            sparse.append(C.timed(lambda: end_to_end(5)))
        n = len(frames)
        fps_alone, fps_e2e, fps_sparse = n / C.median(base), n / C.median(e2e), n / C.median(sparse)
        print(f"# {n} frames of {args.width}x{args.height}, batches of {args.batch_size}, {args.repeats} repeats")
        print(f"detector alone: {fps_alone:.2f} frames/s (runs {', '.join(f'{n / t:.2f}' for t in base)})")
        print(f"end to end:     {fps_e2e:.2f} frames/s (runs {', '.join(f'{n / t:.2f}' for t in e2e)})")
        print(f"--detect-every 5: {fps_sparse:.2f} frames/s (runs {', '.join(f'{n / t:.2f}' for t in sparse)})")
        print(f"# load average after: {C.load_average()}")
        C.result("faces_fps_cpu", fps_e2e / fps_alone, ">=", 0.8)
        print(f"RESULT name=faces_fps_cpu_detect_every_5 value={fps_sparse:.4g} target=none pass=true")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
