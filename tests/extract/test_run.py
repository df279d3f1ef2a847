"""The extraction run end to end on generated corpora: alignment, quirks, failures, resume, shards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vafusion.cache import schema, split
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.inspect import verify_cache
from vafusion.cache.merge import merge_shards
from vafusion.cache.reader import FeatureFile, open_feature_file
from vafusion.cache.writer import FeatureWriter
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.extract.run import ExtractOptions, extract
from vafusion.synth import make_alignment_corpus, make_corpus

FAST = dict(visual_weights="random", vggish_weights="random", image_size=32, batch_size=48, workers=0, progress=False)


@pytest.fixture(scope="module")
def tiny(tiny_extracted):
    return tiny_extracted


def _read_all(cache: Path, feature: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with open_feature_file(cache, feature) as ff:
        return {vid: ff.read(vid) for vid in ff.ids}


def test_quirks_of_the_corpus_land_in_the_cache(tiny):
    corpus, cache, report = tiny
    assert report.ok, (report.failures, report.problems)
    assert verify_cache(cache) == []
    index = read_corpus_index(cache)
    truth = {v.id: v for v in corpus.videos}
    assert sorted(index.ids) == sorted(truth)
    assert {e.fps for e in index} >= {25.0, 30.0}
    for e in index:
        v = truth[e.id]
        assert e.n_frames == v.n_frames and e.fps == v.fps
        assert e.partition == v.partition
        if v.partition == "test":
            assert e.labels is None
        else:
            np.testing.assert_array_equal(np.isnan(e.labels[:, 0]), v.label_missing)
            ok = ~v.label_missing
            np.testing.assert_allclose(e.labels[ok, 0], v.valence[ok], atol=1e-3)
            np.testing.assert_allclose(e.labels[ok, 1], v.arousal[ok], atol=1e-3)
    pair = [e for e in index if e.id.endswith(("_left", "_right"))]
    assert len(pair) == 2 and pair[0].group == pair[1].group
    visual, vggish, logmel = (_read_all(cache, f) for f in ("resnet18", "vggish", "logmel"))
    for vid, v in truth.items():
        feats, mask = visual[vid]
        assert feats.shape == (v.n_frames, 512)
        np.testing.assert_array_equal(mask, ~v.crop_missing)  # gaps = no face
        assert not feats[~mask].any()  # zero rows where no crop
        for audio in (vggish, logmel):
            feats, mask = audio[vid]
            assert mask.all() == v.has_audio and (mask.any() or not feats.any())
    # _left/_right share one audio track: identical audio features
    left, right = sorted(e.id for e in pair)
    np.testing.assert_array_equal(logmel[left][0], logmel[right][0])
    np.testing.assert_array_equal(vggish[left][0], vggish[right][0])
    no_audio = [v.id for v in corpus.videos if not v.has_audio]
    assert no_audio and any(no_audio[0] in w and "no audio stream" in w for w in report.warnings)


def test_discovery_warnings_reach_the_caller_once_and_source_is_recorded(tmp_path):
    import h5py

    corpus = make_corpus(tmp_path / "corpus", n_videos=3, seconds=1.0, seed=5)
    no_audio = next(v.id for v in corpus.videos if not v.has_audio)
    (tmp_path / "corpus" / "cropped_aligned" / corpus.videos[0].id / "99999.jpg").write_bytes(b"x")
    shown: list[str] = []
    report = extract(
        corpus.root, tmp_path / "cache", ExtractOptions(features=("resnet18", "logmel"), **FAST), warn=shown.append
    )
    assert shown == report.warnings
    assert sum(no_audio in w and "no audio stream" in w for w in shown) == 1
    assert any("99999" in w for w in shown)  # crops numbered beyond T, found while listing
    with h5py.File(tmp_path / "cache" / "corpus.h5", "r") as f:
        assert f.attrs["source"] == str(corpus.root)


def test_rerun_is_a_no_op_and_other_corpus_refused(tiny, tmp_path):
    corpus, cache, _ = tiny
    report = extract(corpus.root, cache, ExtractOptions(features=("resnet18", "vggish", "logmel"), **FAST))
    assert report.extracted == {"resnet18": 0, "vggish": 0, "logmel": 0}
    assert report.skipped["resnet18"] == len(corpus.videos)
    other = make_corpus(tmp_path / "other", n_videos=3, seconds=1.0, seed=9)
    from vafusion.errors import VafusionError

    with pytest.raises(VafusionError, match="another corpus"):
        extract(other.root, cache, ExtractOptions(features=("logmel",), **FAST))


def test_adding_a_feature_set_to_an_existing_cache(tiny, tmp_path):
    corpus, cache, _ = tiny
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    (copy / "logmel.h5").unlink()
    report = extract(corpus.root, copy, ExtractOptions(features=("logmel",), **FAST))
    assert report.extracted == {"logmel": len(corpus.videos)}
    assert verify_cache(copy) == []
    for vid, (feats, _mask) in _read_all(copy, "logmel").items():
        np.testing.assert_array_equal(feats, _read_all(cache, "logmel")[vid][0])


def test_frame_alignment_of_audio_and_visual_rows(tmp_path):
    markers = [7, 33, 58]
    for fps, n, beeps in ((25.0, 100, [25, 70]), (30.0, 110, [28, 80])):
        root = tmp_path / f"align{int(fps)}"
        make_alignment_corpus(root / "corpus", fps=fps, n_frames=n, beep_frames=beeps, marker_frames=markers)
        features = ("resnet18", "squeezenet1_1", "vggish", "logmel")
        report = extract(root / "corpus", root / "cache", ExtractOptions(features=features, **FAST))
        assert report.ok
        ((logmel, mask),) = _read_all(root / "cache", "logmel").values()
        assert mask.all()
        energy = logmel.astype(np.float32).mean(axis=1)
        loud = set(np.flatnonzero(energy > energy.min() + 0.5 * (energy.max() - energy.min())) + 1)
        assert set(beeps) <= loud  # the beep's own frame stands out ...
        assert all(min(abs(j - k) for k in beeps) <= 1 for j in loud), sorted(loud)  # ... and only its neighbours
        ((vggish, _),) = _read_all(root / "cache", "vggish").values()
        vggish = vggish.astype(np.float32)
        # A 0.96 s patch centred on frame k hears a beep iff |t_k - t_beep| < 0.48 s: the rows that
        # differ from silence form one run per beep, and the run's centre is the beep's frame.
        silent = np.array([k for k in range(1, n + 1) if min(abs(k - b) for b in beeps) > 0.6 * fps]) - 1
        dist = np.linalg.norm(vggish - vggish[silent].mean(axis=0), axis=1)
        hears = np.flatnonzero(dist > 0.5 * dist.max()) + 1
        for b in beeps:
            run = hears[np.abs(hears - b) < 0.6 * fps]
            assert abs((run.min() + run.max()) / 2 - b) <= 1, (b, run)
            assert 0.6 * 0.96 * fps < len(run) <= 0.96 * fps + 2
        for backbone in ("resnet18", "squeezenet1_1"):  # a ResNet and a non-ResNet (its classifier is a conv)
            ((visual, _vmask),) = _read_all(root / "cache", backbone).values()
            visual = visual.astype(np.float32)
            vdist = np.linalg.norm(visual - np.median(visual, axis=0), axis=1)
            assert set(np.argsort(vdist)[-len(markers) :] + 1) == set(markers), backbone  # each marker in its own row


def test_corrupt_crop_and_corrupt_video_are_reported_not_fatal(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_videos=4, seconds=1.5, seed=5)
    victims = [v for v in corpus.videos if v.has_audio and not v.id.endswith(("_left", "_right"))][:2]
    crop_victim, _video_victim = victims
    crop = sorted((corpus.root / "cropped_aligned" / crop_victim.id).glob("*.jpg"))[3]
    crop.write_bytes(b"not a jpeg at all")
    result = CliRunner().invoke(
        cli,
        [
            "extract",
            str(corpus.root),
            "--cache",
            str(tmp_path / "cache"),
            "--features",
            "resnet18,logmel",
            "--visual-weights",
            "random",
            "--image-size",
            "32",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 1
    assert f"failed: {crop_victim.id} [resnet18]" in result.output and crop.name in result.output
    assert "Traceback" not in result.output
    with open_feature_file(tmp_path / "cache", "resnet18") as ff:
        assert crop_victim.id not in ff.ids and len(ff.ids) == len(corpus.videos) - 1
    # fix the crop: the rerun fills in exactly the missing video
    crop.unlink()
    report = extract(corpus.root, tmp_path / "cache", ExtractOptions(features=("resnet18", "logmel"), **FAST))
    assert report.ok and report.extracted["resnet18"] == 1 and report.extracted["logmel"] == 0


def test_corrupt_video_file_is_a_reported_problem(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_videos=4, seconds=1.5, seed=5)
    victim = next(v for v in corpus.videos if not v.id.endswith(("_left", "_right")))
    video = corpus.root / "videos" / f"{victim.video_name}.mp4"
    video.write_bytes(video.read_bytes()[:200])
    report = extract(corpus.root, tmp_path / "cache", ExtractOptions(features=("logmel",), **FAST))
    assert not report.ok
    assert any(victim.id in p for p in report.problems) or any(f.video_id == victim.id for f in report.failures)
    with open_feature_file(tmp_path / "cache", "logmel") as ff:
        assert victim.id not in ff.ids and len(ff.ids) >= len(corpus.videos) - 1


def test_shards_merge_into_the_same_cache(tiny, tmp_path):
    corpus, cache, _ = tiny
    for k in (1, 2, 3):
        report = extract(corpus.root, tmp_path, ExtractOptions(features=("resnet18", "logmel"), shard=(k, 3), **FAST))
        assert report.ok
    merge_shards(tmp_path)
    assert verify_cache(tmp_path) == []
    index = read_corpus_index(cache)
    for feature in ("resnet18", "logmel"):
        whole, merged = _read_all(cache, feature), _read_all(tmp_path, feature)
        assert sorted(whole) == sorted(merged)
        for vid in whole:
            np.testing.assert_allclose(merged[vid][0], whole[vid][0], atol=1e-3)
            np.testing.assert_array_equal(merged[vid][1], whole[vid][1])
        for k in (1, 2, 3):  # each shard holds the ids the frame-balanced split gives it, and says so
            with FeatureFile(tmp_path / f"{feature}.shard-{k}-of-3.h5") as ff:
                assert ff.ids == split.shard_ids(index, (k, 3)) and ff.attrs[schema.SPLIT_ATTR] == schema.SPLIT_RULE


def test_continuing_a_shard_split_by_vafusion_0_1_0_is_a_clear_error(tiny, tmp_path):
    corpus, cache, _ = tiny
    index = read_corpus_index(cache)
    k, old = next(
        (k, sorted(index.ids)[k - 1 :: 3])
        for k in (1, 2, 3)
        if set(sorted(index.ids)[k - 1 :: 3]) - set(split.shard_ids(index, (k, 3)))
    )
    shutil.copy(cache / schema.CORPUS_FILE, tmp_path / schema.CORPUS_FILE)
    with open_feature_file(cache, "logmel") as ff:  # shard k of 3 as 0.1.0 wrote it: every third id, no split rule
        writer = FeatureWriter(tmp_path, "logmel", ff.dim, ff.extractor, index.fingerprint, shard=(k, 3))
        for vid in old:
            writer.write(vid, *ff.read(vid))
        writer.finalize()
    with pytest.raises(
        VafusionError,
        match=rf"logmel.shard-{k}-of-3.h5: holds \d id\(s\) that shard {k}/3 does not "
        rf"own .*: the shard set was split by another rule",
    ):
        extract(corpus.root, tmp_path, ExtractOptions(features=("logmel",), shard=(k, 3), **FAST))
    with FeatureFile(tmp_path / f"logmel.shard-{k}-of-3.h5") as ff:
        assert ff.ids == old  # left as it was


def test_extract_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        cli, ["extract", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c"), "--features", "logmel"]
    )
    assert r.exit_code != 0 and "Traceback" not in r.output and "nowhere" in r.output
    corpus = make_corpus(tmp_path / "corpus", n_videos=2, seconds=1.0, seed=1)
    r = runner.invoke(cli, ["extract", str(corpus.root), "--cache", str(tmp_path / "c"), "--features", "vggish"])
    assert r.exit_code == 1 and "--vggish-weights" in r.output
    r = runner.invoke(cli, ["extract", str(corpus.root), "--cache", str(tmp_path / "c"), "--features", "resnet99"])
    assert r.exit_code == 1 and "--features resnet99: unknown extractor (did you mean resnet50" in r.output
    r = runner.invoke(cli, ["extract", str(corpus.root), "--cache", str(tmp_path / "c"), "--shard", "3/2"])
    assert r.exit_code == 2 and "1 <= K <= N" in r.output
    bad_weights = tmp_path / "w.pt"
    bad_weights.write_bytes(b"garbage")
    r = runner.invoke(
        cli,
        [
            "extract",
            str(corpus.root),
            "--cache",
            str(tmp_path / "c"),
            "--features",
            "resnet18",
            "--visual-weights",
            str(bad_weights),
        ],
    )
    assert r.exit_code == 1 and "w.pt" in r.output and "Traceback" not in r.output


def test_resume_after_sigkill_equals_a_clean_run(tiny, tmp_path):
    """A real ``vafusion extract`` process killed from outside midway; the rerun gives the session's clean cache.

    The clean run is ``tiny_extracted`` (same corpus and settings as FAST_EXTRACT; the distributed test
    compares against it the same way), and the rerun runs in-process: only the killed run needs a process.
    """
    corpus, clean, _ = tiny
    killed_cache = tmp_path / "killed"
    args = [
        "extract",
        str(corpus.root),
        "--cache",
        str(killed_cache),
        "--features",
        "resnet18,logmel",
        "--visual-weights",
        "random",
        "--image-size",
        "32",
        "--batch-size",
        "48",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vafusion", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parts = killed_cache / ".parts" / "resnet18"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill once some, not all, videos are written
        if parts.is_dir() and len(list(parts.glob("*.h5"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "extraction finished before it could be killed; make the corpus larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_cache / "resnet18.h5").exists()
    done_before = len(list(parts.glob("*.h5")))
    assert 2 <= done_before < len(corpus.videos)
    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert f"resnet18: {len(corpus.videos) - done_before} extracted, {done_before} already there" in rerun.stdout
    assert verify_cache(killed_cache) == []
    for feature in ("resnet18", "logmel"):
        a, b = _read_all(killed_cache, feature), _read_all(clean, feature)
        assert sorted(a) == sorted(b)
        for vid in a:
            np.testing.assert_array_equal(a[vid][0], b[vid][0])
            np.testing.assert_array_equal(a[vid][1], b[vid][1])


def test_vggish_runs_once_for_the_two_persons_of_one_video(tiny, tmp_path, monkeypatch):
    """Only the shard (of 2) that holds the two-person video is extracted, with a one-person video that has
    sound beside it: VGGish on one example per frame of every id was the test's whole time."""
    import vafusion.extract.track_pass as track_pass

    corpus, cache, _ = tiny
    with_audio = [v.id for v in corpus.videos if v.has_audio]
    pair = sorted(v for v in with_audio if v.endswith(("_left", "_right")))
    index = read_corpus_index(cache)
    k = next(k for k in (1, 2) if pair[0] in split.shard_ids(index, (k, 2)))
    ids = split.shard_ids(index, (k, 2))
    assert set(with_audio) & set(ids) - set(pair), ids  # a one-person video to queue once too
    queued = []
    real_add = track_pass._RowQueue.add
    monkeypatch.setattr(
        track_pass._RowQueue, "add", lambda self, vid, *a: (queued.append(vid), real_add(self, vid, *a))
    )
    report = extract(corpus.root, tmp_path / "cache", ExtractOptions(features=("vggish",), shard=(k, 2), **FAST))
    assert report.ok and report.extracted["vggish"] == len(ids)
    assert len(pair) == 2 and set(pair) <= set(ids) and sorted(queued) == sorted(set(with_audio) & set(ids) - {pair[1]})
    with FeatureFile(tmp_path / "cache" / f"vggish.shard-{k}-of-2.h5") as ff:
        rows = {v: ff.read(v)[0] for v in pair}
    np.testing.assert_array_equal(rows[pair[0]], rows[pair[1]])
    np.testing.assert_array_equal(rows[pair[1]], _read_all(cache, "vggish")[pair[1]][0])
