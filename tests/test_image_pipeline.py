"""The device-resident image pipeline: augmentations against numpy references, labels kept with
their images, disjoint rank/micro-step slices that rebuild the global batch bit-exactly, epoch
reshuffling, resume, and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.data.image_pipeline import DeviceImageLoader, cutout, flip, normalise, translate

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _identified_dataset(n=200):
    """Constant images whose first two channels spell their index (so any flip/shift keeps it
    readable) and labels that are a fixed function of the index."""
    idx = np.arange(n)
    x = np.zeros((n, 3, 32, 32), np.uint8)
    x[:, 0], x[:, 1], x[:, 2] = (idx // 256)[:, None, None], (idx % 256)[:, None, None], 7
    labels = (idx * 7 + 3) % 10
    return torch.from_numpy(x), torch.from_numpy(labels)


def _indices_of(batch_x):
    """Invert the normalisation of the identified images -> their dataset index."""
    u8 = batch_x[:, :, 0, 0] * (torch.tensor(STD) * 255) + torch.tensor(MEAN) * 255
    u8 = u8.round().long()
    return u8[:, 0] * 256 + u8[:, 1]


def _loader(images, labels, **kw):
    args = dict(global_batch=32, micro_batch=32, mean=MEAN, std=STD, flip=True, translate=2, seed=3)
    args.update(kw)
    return DeviceImageLoader(
        images, labels, args.pop("global_batch"), args.pop("micro_batch"), args.pop("mean"), args.pop("std"), **args
    )


# --------------------------------------------------------------------------- the augmentations
def test_normalise_matches_the_formula():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    ref = (x.numpy() / 255.0 - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
    assert np.allclose(normalise(x, MEAN, STD).numpy(), ref, atol=1e-5)


def test_flip_is_a_left_right_mirror_where_asked():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    mask = torch.tensor([True, False, True, False, False, True])
    out = flip(x, mask).numpy()
    for i, m in enumerate(mask):
        assert np.array_equal(out[i], x[i].numpy()[:, :, ::-1] if m else x[i].numpy())


def test_translate_is_a_reflect_padded_crop():
    pad = 3
    x = torch.randint(0, 256, (9, 3, 32, 32), dtype=torch.uint8)
    dy = torch.tensor([-3, -2, -1, 0, 1, 2, 3, 0, -3])
    dx = torch.tensor([0, 3, -3, 2, -1, 1, 3, 0, -2])
    out = translate(x, dy, dx).numpy()
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    for i in range(len(x)):
        y0, x0 = pad + int(dy[i]), pad + int(dx[i])
        assert np.array_equal(out[i], padded[i, :, y0 : y0 + 32, x0 : x0 + 32])
    assert out.dtype == np.uint8


def test_loader_shifts_stay_within_the_pad_and_use_all_of_it():
    images, labels = _identified_dataset(256)
    loader = _loader(images, labels, global_batch=256, micro_batch=256, translate=2, seed=0)
    p = loader.draw_params(torch.arange(256))
    for s in (p.dy, p.dx):
        assert int(s.min()) == -2 and int(s.max()) == 2
    assert p.flip.float().mean().item() == pytest.approx(0.5, abs=0.1)


def test_cutout_zeroes_exactly_the_square():
    x = torch.ones(3, 3, 32, 32)
    cy, cx = torch.tensor([10, 0, 31]), torch.tensor([20, 0, 31])
    out = cutout(x, 8, cy, cx)
    for i in range(3):
        ref = np.ones((32, 32))
        top, left = int(cy[i]) - 4, int(cx[i]) - 4
        ref[max(top, 0) : max(top + 8, 0), max(left, 0) : max(left + 8, 0)] = 0
        for c in range(3):
            assert np.array_equal(out[i, c].numpy(), ref)
    assert (out[0] == 0).sum().item() == 3 * 64  # fully inside: size x size per channel
    assert (out[1] == 0).sum().item() == 3 * 16  # clipped at the corner


# --------------------------------------------------------------------------- batches
def test_labels_stay_with_their_images_and_an_epoch_is_a_permutation():
    images, labels = _identified_dataset(200)
    loader = _loader(images, labels, cutout=0)  # 200 // 32 = 6 steps per epoch, 8 dropped
    batches = loader.global_batches()
    seen_per_epoch = []
    for epoch in range(3):
        seen = []
        for _ in range(loader.steps_per_epoch):
            ((x, y),) = next(batches)
            idx = _indices_of(x)
            assert torch.equal(y, labels[idx])
            seen.append(idx)
        seen = torch.cat(seen)
        assert len(set(seen.tolist())) == len(seen) == 6 * 32  # no repeats within an epoch
        seen_per_epoch.append(seen)
    assert not torch.equal(seen_per_epoch[0], seen_per_epoch[1])  # reshuffled every epoch


def test_ranks_and_micro_steps_rebuild_the_global_batch_exactly():
    images = torch.randint(0, 256, (150, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (150,))
    kw = dict(global_batch=64, translate=2, cutout=6, flip=True, seed=11)
    single = _loader(images, labels, micro_batch=64, **kw).global_batches()
    ranks = [_loader(images, labels, micro_batch=16, rank=r, world_size=2, **kw).global_batches() for r in range(2)]
    for _ in range(3):  # crosses an epoch boundary (2 steps per epoch)
        ((x, y),) = next(single)
        per_rank = [next(g) for g in ranks]
        assert all(len(m) == 2 for m in per_rank)  # 64 = 2 micro-steps x 2 ranks x 16
        # order of the global batch: micro-step j, then rank r
        parts = [per_rank[r][j] for j in range(2) for r in range(2)]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_alternating_flip_mirrors_each_image_on_every_other_epoch():
    images, labels = _identified_dataset(64)
    images[:, 2, :, :16] = 200  # the third channel shows which way the image faces
    loader = _loader(images, labels, global_batch=64, micro_batch=64, alternating_flip=True, translate=0)
    batches = loader.global_batches()
    facing = []
    for _ in range(3):
        ((x, _),) = next(batches)
        idx = _indices_of(x)
        left_bright = x[:, 2, 0, 0] > x[:, 2, 0, 31]
        facing.append(torch.empty(64, dtype=torch.bool).index_put_((idx,), ~left_bright))  # True = mirrored
    assert torch.equal(facing[0], ~facing[1]) and torch.equal(facing[0], facing[2])
    assert 10 < int(facing[0].sum()) < 54  # a random half, not all or none


def test_resume_reproduces_the_uninterrupted_stream():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (100,))
    kw = dict(global_batch=16, micro_batch=8, cutout=4, seed=5)
    ref = _loader(images, labels, **kw)
    ref_batches = ref.global_batches()
    for _ in range(9):  # 6 steps per epoch: stop inside the second epoch
        next(ref_batches)
    state = ref.state_dict()
    assert state == {"epoch": 1, "position": 3}
    resumed = _loader(images, labels, **kw)
    resumed.load_state_dict(state)
    resumed_batches = resumed.global_batches()
    for _ in range(5):
        a, b = next(ref_batches), next(resumed_batches)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_channels_last_output_has_the_same_values():
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (40,))
    ((a, _),) = next(_loader(images, labels).global_batches())
    ((b, _),) = next(_loader(images, labels, channels_last=True).global_batches())
    assert b.is_contiguous(memory_format=torch.channels_last) and torch.equal(a, b)


# --------------------------------------------------------------------------- evaluation
def test_tta_level_2_averages_the_six_airbench_views():
    from optbench.tasks.image_classification import tta_logits

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    w, b = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()

    def f(v):
        return v.reshape(len(v), -1) @ w.T + b

    xn = x.numpy()
    padded = np.pad(xn, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    views = {"id": xn, "up_left": padded[:, :, 0:32, 0:32], "down_right": padded[:, :, 2:34, 2:34]}
    mirror = {k: 0.5 * f(v) + 0.5 * f(v[..., ::-1]) for k, v in views.items()}
    with torch.no_grad():
        assert np.allclose(tta_logits(model, x, 0).numpy(), f(xn))
        assert np.allclose(tta_logits(model, x, 1).numpy(), mirror["id"])
        expected = 0.5 * mirror["id"] + 0.25 * mirror["up_left"] + 0.25 * mirror["down_right"]
        assert np.allclose(tta_logits(model, x, 2).numpy(), expected)


def test_evaluate_classifier_counts_correct_predictions():
    from optbench.tasks.image_classification import evaluate_classifier

    images, labels = _identified_dataset(50)

    class Oracle(torch.nn.Module):  # predicts the true label for even indices, wrong for odd
        def forward(self, x):
            idx = _indices_of(x)
            pred = torch.where(idx % 2 == 0, labels[idx], (labels[idx] + 1) % 10)
            return torch.nn.functional.one_hot(pred, 10).float() * 5

    acc, nll = evaluate_classifier(Oracle(), images, labels, MEAN, STD, batch_size=16, tta=1)
    assert acc == pytest.approx(0.5)
    logp = torch.log_softmax(torch.tensor([5.0] + [0.0] * 9), 0)
    assert nll == pytest.approx(-(0.5 * logp[0] + 0.5 * logp[1]).item(), rel=1e-6)


# --------------------------------------------------------------------------- the airbench scheme
def _airbench_transcription(images, labels, batch, seed, epochs, pad=2, dtype=torch.float16):
    """airbench's CifarLoader (flip + translate), transcribed from its description: the set
    normalised once as torchvision does on x / 255 in fp16; epoch 0 mirrors a random half
    (rand < 0.5) and reflect-pads by `pad`; every epoch crops image i at its own (sy, sx) drawn
    in [-pad, pad], mirrors ALL images on odd epochs, then cuts drop-last batches out of a fresh
    permutation. One generator, in that draw order."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(MEAN).to(dtype).view(-1, 1, 1)
    std = torch.tensor(STD).to(dtype).view(-1, 1, 1)
    x = ((images.to(dtype) / 255) - mean) / std
    n = len(x)
    pre = torch.rand(n, generator=g) < 0.5
    x = x.numpy() if dtype != torch.bfloat16 else x.float().numpy()
    x = np.where(pre.numpy()[:, None, None, None], x[..., ::-1], x)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = []
    for epoch in range(epochs):
        shifts = torch.randint(-pad, pad + 1, (n, 2), generator=g).numpy()
        crops = np.stack(
            [padded[i, :, pad + sy : pad + sy + 32, pad + sx : pad + sx + 32] for i, (sy, sx) in enumerate(shifts)]
        )
        if epoch % 2 == 1:
            crops = crops[..., ::-1]
        perm = torch.randperm(n, generator=g)
        for b in range(n // batch):
            idx = perm[b * batch : (b + 1) * batch]
            out.append((torch.from_numpy(np.ascontiguousarray(crops[idx.numpy()])), labels[idx]))
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_airbench_scheme_equals_a_transcription_of_its_loader(channels_last):
    images = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (70,))
    expected = _airbench_transcription(images, labels, batch=16, seed=4, epochs=3)  # 4 batches/epoch
    loader = _loader(
        images,
        labels,
        global_batch=16,
        micro_batch=16,
        seed=4,
        flip=True,
        translate=2,
        dtype=torch.float16,
        scheme="airbench",
        channels_last=channels_last,
    )
    batches = loader.global_batches()
    for want_x, want_y in expected:
        ((x, y),) = next(batches)
        assert x.dtype == torch.float16 and torch.equal(x, want_x) and torch.equal(y, want_y)
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_airbench_scheme_resumes_bit_exactly_forward_and_backward():
    images = torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (60,))
    kw = dict(global_batch=16, micro_batch=8, seed=9, dtype=torch.float16, scheme="airbench")
    ref = _loader(images, labels, **kw).global_batches()
    stream = [next(ref) for _ in range(12)]  # 3 steps per epoch: four epochs
    resumed = _loader(images, labels, **kw)
    for step in (7, 2):  # a fresh loader replays to epoch 2; the same one rewinds to epoch 0
        resumed.load_state_dict({"epoch": step // 3, "position": step % 3})
        it = resumed.global_batches()
        for want in stream[step : step + 4]:
            got = next(it)
            assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want))


def test_airbench_scheme_ranks_rebuild_the_global_batch():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (100,))
    kw = dict(global_batch=32, seed=2, scheme="airbench")
    ((x, y),) = next(_loader(images, labels, micro_batch=32, **kw).global_batches())
    parts = [
        next(_loader(images, labels, micro_batch=16, rank=r, world_size=2, **kw).global_batches())[0] for r in range(2)
    ]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


def test_airbench_scheme_refuses_cutout_and_unknown_schemes():
    images, labels = _identified_dataset(40)
    with pytest.raises(ValueError, match="cutout=4 is invalid with the airbench loader"):
        _loader(images, labels, cutout=4, scheme="airbench")
    with pytest.raises(ValueError, match="scheme 'torchvision' is invalid; valid choices: optbench, airbench"):
        _loader(images, labels, scheme="torchvision")


# --------------------------------------------------------------------------- dtype, permutation, eval
@pytest.mark.parametrize("scheme", ["optbench", "airbench"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_batches_come_in_the_requested_dtype(scheme, dtype):
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (40,))
    ((ref, _),) = next(_loader(images, labels, scheme=scheme).global_batches())
    ((x, y),) = next(_loader(images, labels, scheme=scheme, dtype=dtype).global_batches())
    assert x.dtype == dtype and torch.equal(y, next(_loader(images, labels, scheme=scheme).global_batches())[0][1])
    tol = {torch.float32: 1e-6, torch.bfloat16: 2e-2, torch.float16: 3e-3}[dtype]
    assert torch.allclose(x.float(), ref, atol=tol, rtol=tol)


def test_optbench_permutation_is_drawn_on_the_data_device_from_seed_and_epoch():
    images, labels = _identified_dataset(64)
    loader = _loader(images, labels, global_batch=64, micro_batch=64, seed=3, flip=False, translate=0)
    batches = loader.global_batches()
    for epoch in range(2):
        ((x, _),) = next(batches)
        g = torch.Generator(device=images.device).manual_seed(3 * 100_003 + epoch)
        assert torch.equal(_indices_of(x), torch.randperm(64, generator=g, device=images.device))
    assert loader._gen.device == images.device


def test_optbench_scheme_is_translate_of_flip_then_normalise():
    """The one-gather path gives exactly the composition of the separate augmentations."""
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (50,))
    loader = _loader(images, labels, global_batch=50, micro_batch=50, translate=3, flip=True)
    idx = torch.randperm(50)
    p = loader.draw_params(idx)
    x, _ = loader.augment(idx, p)
    assert torch.equal(x, normalise(translate(flip(images[idx], p.flip), p.dy, p.dx), MEAN, STD))


def test_evaluation_normalises_with_tensors_made_once(monkeypatch):
    from optbench.data.image_pipeline import Normaliser
    from optbench.tasks.image_classification import evaluate_classifier

    images, labels = _identified_dataset(50)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    ref = evaluate_classifier(model, images, labels, MEAN, STD, batch_size=50)
    made = []
    monkeypatch.setattr(torch, "as_tensor", lambda *a, _f=torch.as_tensor, **k: made.append(1) or _f(*a, **k))
    norm = Normaliser(MEAN, STD, images.device)
    assert len(made) == 2
    got = evaluate_classifier(model, images, labels, MEAN, STD, batch_size=8, normaliser=norm)  # 7 batches
    assert len(made) == 2 and got == pytest.approx(ref)
    evaluate_classifier(model, images, labels, MEAN, STD, batch_size=8)  # no normaliser: one per call
    assert len(made) == 4
    half = Normaliser(MEAN, STD, images.device, torch.float16, style="airbench")
    assert half(images[:2]).dtype == torch.float16
