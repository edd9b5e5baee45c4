"""The procedural cartoon faces and the attribute classifier that judges the face generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.data.faces import HAIR_STYLES, SMILE_RANGE, TILT_RANGE, attribute_labels, sample_faces


def test_faces_shape_range_and_attributes():
    images, attrs = sample_faces(16, seed=3)
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    for key in ("face_shape", "skin", "hair_color", "hair_style", "eye_size", "smile", "tilt", "glasses", "background"):
        assert len(attrs[key]) == 16, key
    assert set(np.unique(attrs["hair_style"])) <= set(range(len(HAIR_STYLES)))
    assert SMILE_RANGE[0] <= attrs["smile"].min() and attrs["smile"].max() <= SMILE_RANGE[1]
    assert TILT_RANGE[0] <= attrs["tilt"].min() and attrs["tilt"].max() <= TILT_RANGE[1]
    assert attrs["glasses"].dtype == bool


def test_faces_deterministic_per_seed():
    a, attrs_a = sample_faces(8, seed=5)
    b, attrs_b = sample_faces(8, seed=5)
    c, _ = sample_faces(8, seed=6)
    assert torch.equal(a, b)
    for k in attrs_a:
        np.testing.assert_array_equal(attrs_a[k], attrs_b[k])
    assert not torch.equal(a, c)


def test_faces_differ_and_attributes_show():
    """A face with glasses is darker around the eyes than the same face without them."""
    from backends.data.faces import render_face, sample_attributes

    attrs = sample_attributes(1, seed=0)
    one = {k: v[0] for k, v in attrs.items()}
    one.update(tilt=0.0, glasses=False, center=np.zeros(2, np.float32))
    plain = render_face(one).astype(np.float32)
    one["glasses"] = True
    with_glasses = render_face(one).astype(np.float32)
    assert np.abs(plain - with_glasses).sum() > 0
    assert with_glasses.mean() < plain.mean()


def test_label_frequencies_cover_every_class():
    _, attrs = sample_faces(400, seed=2)
    labels = attribute_labels(attrs)
    for key, classes in (("smile", 2), ("glasses", 2), ("hair", 3), ("tilt", 2)):
        freq = np.bincount(labels[key], minlength=classes) / 400
        assert freq.min() > 0.1, (key, freq)


def test_classifier_reads_attributes_and_frechet():
    from backends.models.attribute_classifier import (
        attribute_frequencies,
        frechet_distance,
        frechet_from_features,
        load_classifier,
        predict,
    )

    model = load_classifier()
    images, attrs = sample_faces(300, seed=7)
    labels = attribute_labels(attrs)
    pred = predict(images, model)
    for key in ("smile", "glasses", "hair", "tilt"):
        assert np.mean(pred[key] == labels[key]) > 0.95, key
    assert np.mean(np.abs(pred["tilt_deg"] - attrs["tilt"])) < 3.0
    freq = attribute_frequencies(pred)
    assert abs(freq["glasses"] - attrs["glasses"].mean()) < 0.05
    # Frechet distance: ~0 for a set against itself, larger against a collapsed set.
    assert frechet_from_features(pred["features"], pred["features"]) == pytest.approx(0.0, abs=1e-3)
    other, _ = sample_faces(300, seed=8)
    d_same = frechet_distance(images, other, model)
    d_collapsed = frechet_distance(images, images[:1].expand(300, -1, -1, -1) + 0.01 * torch.rand(300, 3, 32, 32, generator=torch.Generator().manual_seed(0)), model)
    assert d_same < d_collapsed
