"""The prepared-volume cache: hits skip the build, changed sources rebuild, failures leave nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fake_datasets import make_folder, truncate

from mixseg_lite.data.cache import cache_key, load_cached
from mixseg_lite.data.nifti import load_folder
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError

PARAMS = {"loader": "folder", "size": 16}


class CountingBuild:
    """``build`` callable for :func:`load_cached` that counts its calls."""

    def __init__(self, images: Path, labels: Path):
        self.images, self.labels, self.calls = images, labels, 0

    def __call__(self) -> list[Volume]:
        self.calls += 1
        volumes = load_folder(self.images, self.labels)
        volumes[0].meta.update(shape=(4, 10, 12), path=Path("/x/y.nii.gz"), weights=np.arange(3.0),
                               nested={"a": [1, (2, 3)], "none": None})
        return volumes


@pytest.fixture
def dataset(tmp_path):
    images, labels = make_folder(tmp_path / "data", num_cases=2)
    sources = sorted(images.iterdir()) + sorted(labels.iterdir())
    return CountingBuild(images, labels), sources, tmp_path / "cache"


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def assert_same_volumes(loaded: list[Volume], built: list[Volume]) -> None:
    assert len(loaded) == len(built)
    for a, b in zip(loaded, built):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.image.dtype == np.float32 and a.label.dtype == np.int64
        assert (a.spacing, a.case_id, a.modalities, a.class_names) == (b.spacing, b.case_id, b.modalities,
                                                                      b.class_names)
        assert a.meta.keys() == b.meta.keys()
        for key in a.meta:
            np.testing.assert_equal(a.meta[key], b.meta[key])
            assert type(a.meta[key]) is type(b.meta[key]), key


def test_second_call_is_a_hit_and_round_trips(dataset):
    build, sources, cache_dir = dataset
    built = load_cached(PARAMS, sources, build, cache_dir)
    loaded = load_cached(PARAMS, sources, build, cache_dir)
    assert build.calls == 1
    assert_same_volumes(loaded, built)
    assert isinstance(loaded[0].meta["shape"], tuple) and isinstance(loaded[0].meta["path"], Path)
    loaded[0].image[0, 0, 0, 0] = -1.0  # copy-on-write: the cache file is not modified
    assert load_cached(PARAMS, sources, build, cache_dir)[0].image[0, 0, 0, 0] == built[0].image[0, 0, 0, 0]
    assert entries(cache_dir) == [cache_key(PARAMS, sources)]


def test_other_parameters_get_their_own_entry(dataset):
    build, sources, cache_dir = dataset
    load_cached(PARAMS, sources, build, cache_dir)
    load_cached(dict(PARAMS, size=32), sources, build, cache_dir)
    assert build.calls == 2 and len(entries(cache_dir)) == 2


def test_touched_or_modified_source_rebuilds_and_drops_the_stale_entry(dataset):
    build, sources, cache_dir = dataset
    load_cached(PARAMS, sources, build, cache_dir)
    stat = sources[0].stat()
    os.utime(sources[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    load_cached(PARAMS, sources, build, cache_dir)
    assert build.calls == 2
    with open(sources[1], "ab") as handle:  # same mtime resolution cannot hide a size change
        handle.write(b"\0")
    load_cached(PARAMS, sources, build, cache_dir)
    assert build.calls == 3
    assert entries(cache_dir) == [cache_key(PARAMS, sources)]


def test_failing_build_leaves_no_partial_entry(dataset):
    build, sources, cache_dir = dataset
    truncate(sources[1])  # case1.nii.gz: load_folder finds it while building
    with pytest.raises(InputError, match="case1.nii.gz"):
        load_cached(PARAMS, sources, build, cache_dir)
    assert entries(cache_dir) == []


def test_failing_write_leaves_no_partial_entry(dataset):
    build, sources, cache_dir = dataset

    def unstorable():
        volumes = build()
        volumes[1].meta["model"] = object()  # found only after volume 0 was written
        return volumes

    with pytest.raises(InputError, match="cannot store meta"):
        load_cached(PARAMS, sources, unstorable, cache_dir)
    assert entries(cache_dir) == []


def test_damaged_entry_is_rebuilt_and_missing_source_is_reported(dataset):
    build, sources, cache_dir = dataset
    load_cached(PARAMS, sources, build, cache_dir)
    (cache_dir / cache_key(PARAMS, sources) / "00000_image.npy").unlink()
    assert_same_volumes(load_cached(PARAMS, sources, build, cache_dir), build())
    sources[0].unlink()
    with pytest.raises(InputError, match=sources[0].name):
        load_cached(PARAMS, sources, build, cache_dir)
