"""The shipped MTCNN: its weights verify and match the project's modules, P-Net is the fully
convolutional sliding window it should be, and the cascade finds the astronaut's face with its
five landmarks where a person marked them by eye, and finds no face in a brick wall."""

import json

import pytest
import torch

from backends.functional.boxes import nms, pyramid_scales, regress, square
from backends.imageio import load_image
from backends.models.mtcnn import CLASSES, NETS, load_mtcnn, normalise, shipped_path
from backends.models.mtcnn_detect import candidates, detect, finish, onet_scores, pyramid
from backends.models.weights import WEIGHTS_DIR, load_weights, sha256_of, verify

# Marked by eye on assets/images/astronaut.png (x, y): left eye, right eye, nose tip, mouth corners;
# and the face's extent (hairline to chin, cheek to cheek).
ASTRONAUT_LANDMARKS = torch.tensor([[203.0, 101], [247, 103], [223, 128], [205, 142], [245, 142]])
ASTRONAUT_FACE = (180.0, 60.0, 273.0, 180.0)
LANDMARK_TOL = 8.0  # pixels, on a face about 90 pixels wide


def picture(name):
    return torch.from_numpy(load_image(f"assets/images/{name}.png").pixels).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def nets():
    return load_mtcnn()


@pytest.fixture(scope="module")
def astronaut(nets):
    with torch.no_grad():
        return detect(nets, picture("astronaut"))


def test_shipped_weights_verify_and_carry_their_source_and_licence():
    manifest = json.loads((WEIGHTS_DIR / "manifest.json").read_text())
    for net in NETS:
        path = shipped_path(net)
        assert verify(path) == path
        entry = manifest[path.name]
        assert entry["sha256"] == sha256_of(path)
        assert entry["licence"] == "MIT" and "Timothy Esler" in entry["attribution"]
        assert entry["source_sha256"] == "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"
    licence = (WEIGHTS_DIR / "MTCNN-LICENSE.txt").read_text()
    assert "MIT License" in licence and "Copyright (c) 2019 Timothy Esler" in licence


def test_state_dict_keys_and_shapes_match_the_modules():
    for net in NETS:
        stored = load_weights(shipped_path(net))
        own = CLASSES[net]().state_dict()
        assert {k: tuple(v.shape) for k, v in stored.items()} == {k: tuple(v.shape) for k, v in own.items()}


def test_pnet_cell_equals_pnet_on_its_12_pixel_window(nets):
    pnet = nets[0]
    x = normalise(picture("astronaut")[:, :, 50:91, 170:221])  # 41 x 51: a non-square patch
    with torch.no_grad():
        prob, offsets = pnet(x)
        # (41 - 12) // 2 + 1 = 15 whole windows down, 20 across, plus one cell half outside on odd sides
        # (the pooling rounds up)
        assert prob.shape == (1, 16, 21)
        for i, j in ((0, 0), (7, 3), (14, 19), (2, 11)):
            p, o = pnet(x[:, :, 2 * i: 2 * i + 12, 2 * j: 2 * j + 12])
            assert p.shape == (1, 1, 1)
            assert abs(p.item() - prob[0, i, j].item()) < 1e-5
            assert torch.allclose(o[0, :, 0, 0], offsets[0, :, i, j], atol=1e-5)


def test_probabilities_are_probabilities(nets):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        r = nets[1](torch.randn(4, 3, 24, 24, generator=gen))
        o = nets[2](torch.randn(4, 3, 48, 48, generator=gen))
    assert [t.shape for t in r] == [(4,), (4, 4)]
    assert [t.shape for t in o] == [(4,), (4, 4), (4, 10)]
    assert ((r[0] >= 0) & (r[0] <= 1)).all() and ((o[0] >= 0) & (o[0] <= 1)).all()


def test_finds_the_astronauts_face_with_landmarks_inside_it(astronaut):
    faces = astronaut.faces
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0].tolist()
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    assert faces.scores[0] > 0.99
    # the box lies on the face: its centre inside the marked face, its size that of the face
    assert fx1 < (x1 + x2) / 2 < fx2 and fy1 < (y1 + y2) / 2 < fy2
    assert 0.6 < (x2 - x1) / (fx2 - fx1) < 1.3
    pts = faces.landmarks[0]
    assert ((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) & (pts[:, 1] < y2)).all()
    assert (pts - ASTRONAUT_LANDMARKS).norm(dim=1).max() < LANDMARK_TOL


def test_no_face_in_a_brick_wall(nets):
    with torch.no_grad():
        assert len(detect(nets, picture("brick")).faces) == 0


def test_stages_chain_as_documented(nets, astronaut):
    d = astronaut
    image = picture("astronaut")
    assert [lv.scale for lv in d.levels] == pytest.approx(pyramid_scales(512, 512, 20))
    assert (d.candidates.scores >= 0.6).all() and len(d.candidates) > len(d.proposals) > len(d.refined) >= len(d.faces)
    # proposals are squares (NMS, then P-Net's offsets, then squared)
    w, h = (d.proposals.boxes[:, 2:] - d.proposals.boxes[:, :2]).unbind(1)
    assert torch.allclose(w, h, atol=1e-3)
    # by hand from the candidates: NMS within scales, across, regress, square
    c = d.candidates
    k = nms(c.boxes, c.scores, 0.5, groups=c.level)
    k = k[nms(c.boxes[k], c.scores[k], 0.7)]
    assert torch.allclose(square(regress(c.boxes[k], c.offsets[k])), d.proposals.boxes)
    # the final stage from the refined boxes, with a threshold no box beats, gives nothing
    with torch.no_grad():
        scored = onet_scores(nets[2], image, d.refined)
    assert len(finish(scored, 1.0)) == 0 and len(finish(scored, 0.7)) == len(d.faces)


def test_an_image_smaller_than_one_window_is_refused(nets):
    with pytest.raises(ValueError, match="12-pixel window"):
        candidates(pyramid(nets[0], torch.rand(1, 3, 30, 40), 40), 0.6, 30, 40)
