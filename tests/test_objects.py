"""Object paths (vaerl.models.objects): shapes, round trips, and that they keep where a small object is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SUMS

from vaerl.models import build_model
from vaerl.models.objects import (
    PART_STATS,
    ForegroundProjections,
    ObjectEncoder,
    ObjectProjections,
    cell_assignment,
    weighted_moments,
)


def dot_frames(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Black frames with one bright 2x2 dot at a random place; returns frames (N, 1, size, size) and dot columns."""
    rng = np.random.default_rng(seed)
    frames = torch.zeros(n, 1, size, size)
    cols, rows = rng.integers(2, size - 3, n), rng.integers(2, size - 3, n)
    for i, (r, c) in enumerate(zip(rows, cols)):
        frames[i, 0, r:r + 2, c:c + 2] = 1.0
    return frames, cols


def test_projections_are_row_and_column_maxima_and_flatten_round_trips() -> None:
    torch.manual_seed(0)
    encoder = ObjectEncoder(in_channels=1, input_hw=(84, 84), channels=3)
    frames = torch.rand(5, 1, 84, 84)
    objects = encoder(frames)
    assert objects.x.shape == (5, 3, 42) and objects.y.shape == (5, 3, 42)
    # each location's scores over the channels and "nothing" sum to one; projections are (smooth) maxima
    scores = torch.softmax(encoder.net(frames) + encoder.location_bias, dim=1)[:, :3]
    assert (objects.x <= scores.amax(-2) + 1e-6).all() and (objects.x >= scores.mean(-2) - 1e-6).all()
    assert (objects.x.amax(-1) - scores.amax((-2, -1))).abs().max() < 0.05

    flat = objects.flatten()
    assert flat.shape == (5, encoder.latent_dim) == (5, 3 * (42 + 42))
    for a, b in zip(ObjectProjections.unflatten(flat, 3, encoder.grid), objects):
        torch.testing.assert_close(a, b)


def test_maps_are_outer_products() -> None:
    x = torch.tensor([[[0.0, 1.0, 0.5]]])
    y = torch.tensor([[[0.25, 1.0]]])
    torch.testing.assert_close(ObjectProjections(x, y).maps(),
                               torch.tensor([[[[0.0, 0.25, 0.125], [0.0, 1.0, 0.5]]]]))


@pytest.mark.parametrize(("path", "extra"), [
    ({"foreground_projections": False}, 0),
    ({"object_channels": 2, "foreground_projections": False}, 2 * (42 + 42)),
    ({}, 14 * 14),
    ({"foreground_cells": 0, "foreground_sums": True}, 84 + 84),
    ({"foreground_parts": 3, **SUMS}, 84 + 84 + 3 * PART_STATS),
    ({"foreground_cells": 7, "foreground_sums": True}, 84 + 84 + 7 * 7),
    ({"foreground_parts": 2, "foreground_cells": 4, "foreground_sums": True}, 84 + 84 + 2 * PART_STATS + 4 * 4),
    ({"foreground_parts": 2}, 14 * 14 + 2 * PART_STATS),
])
def test_latent_holds_objects_and_decodes_from_them(path: dict, extra: int) -> None:
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 84, 84), **path).eval()
    x = torch.rand(3, 1, 84, 84)
    latent = model.encode_latent(x)
    assert latent.shape == (3, model.latent_dim()) == (3, 32 + extra)
    assert model.latent_space().shape == (model.latent_dim(),)
    # the object part is deterministic: a posterior sample differs only in the Gaussian part
    sample = model.encode_latent(x, "sample", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample[:, 32:], latent[:, 32:])
    # decoding the mean latent reproduces the reconstruction
    torch.testing.assert_close(model.decode_latent(latent), model.reconstruct(x))
    assert model.sample_prior(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 84, 84)


def test_odd_input_sizes_reconstruct_at_their_size() -> None:
    model = build_model("vae", input_shape=(1, 85, 63), encoder_layers=[[8, 4, 2, 1], [16, 4, 2, 1]],
                        object_channels=1, foreground_projections=False)
    out = model.training_loss(torch.rand(2, 1, 85, 63))
    assert out.recon.shape == (2, 1, 85, 63)


def test_object_channel_finds_a_small_dot() -> None:
    """After a short training run on frames of one dot, the object channel's column projection peaks at the dot,
    and reconstructions draw it."""
    torch.manual_seed(0)
    frames, _ = dot_frames(512, seed=0)
    model = build_model("vae", input_shape=(1, 32, 32), encoder_layers=[[8, 4, 2, 1], [16, 4, 2, 1]],
                        hidden_dim=32, latent_dim=4, object_channels=1, foreground_projections=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    weights = 1.0 + 19.0 * (frames > 0.5).float()  # as the background weighting marks the dot
    losses = []
    for _ in range(300):
        batch = torch.randint(0, len(frames), (64,))
        loss = model.training_loss(frames[batch], weights[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.1 * np.mean(losses[:20])

    test, cols = dot_frames(200, seed=1)
    with torch.no_grad():
        objects = model.object_encoder(test)
        recon = model.reconstruct(test)
    # the dot covers columns c, c + 1; half-resolution cell j covers columns 2j, 2j + 1
    found = objects.x[:, 0].argmax(-1).numpy() * 2 + 0.5
    assert np.abs(found - (cols + 0.5)).max() <= 2.5
    # the reconstruction is brightest on the dot
    peak_cols = recon[:, 0].amax(1).argmax(-1).numpy()
    assert np.mean(np.abs(peak_cols - (cols + 0.5)) <= 1) > 0.95


def test_background_is_kept_in_the_weights_and_ignored_by_the_detector() -> None:
    """Object channels see frames minus the background set by pretraining, and checkpoints carry it."""
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 84, 84), object_channels=2, foreground_projections=False).eval()
    background = torch.rand(1, 84, 84)
    model.set_background(background)
    assert "object_encoder.background" in model.state_dict()
    torch.testing.assert_close(model.state_dict()["object_encoder.background"], background)
    # a frame equal to the background looks to the detector like an empty frame does without one
    empty = build_model("vae", input_shape=(1, 84, 84), object_channels=2, foreground_projections=False).eval()
    empty.load_state_dict({**model.state_dict(), "object_encoder.background": torch.zeros(1, 84, 84)})
    torch.testing.assert_close(model.encode_objects(background[None]).flatten(),
                               empty.encode_objects(torch.zeros(1, 1, 84, 84)).flatten())
    # a plain VAE ignores it
    build_model("vae", input_shape=(1, 84, 84), foreground_projections=False).set_background(background)


def test_foreground_projections_are_row_and_column_sums_of_the_distance_to_the_background() -> None:
    encoder = ForegroundProjections(in_channels=3, input_hw=(6, 5))
    background = torch.full((3, 6, 5), 0.25)
    encoder.background.copy_(background)
    frame = background.clone()
    frame[:, 2, 1] = 1.0   # a bright pixel: 0.75 above the background in each colour
    frame[0, 4, 3] = 0.0   # a dark one: 0.25 below in one colour
    objects = encoder(frame[None])
    assert objects.x.shape == (1, 1, 5) and objects.y.shape == (1, 1, 6) and encoder.latent_dim == 11
    torch.testing.assert_close(objects.x[0, 0], torch.tensor([0.0, 2.25, 0.0, 0.25, 0.0]))
    torch.testing.assert_close(objects.y[0, 0], torch.tensor([0.0, 0.0, 2.25, 0.0, 0.25, 0.0]))
    # a frame equal to the background is empty
    assert encoder(background[None]).flatten().abs().max() == 0


def test_foreground_projections_keep_a_one_pixel_objects_sub_pixel_place() -> None:
    """A dot whose intensity splits between two columns moves its projection's centre of mass with the split."""
    encoder = ForegroundProjections(in_channels=1, input_hw=(8, 8))
    centres = []
    for share in (0.0, 0.25, 0.5, 0.75):
        frame = torch.zeros(1, 1, 8, 8)
        frame[0, 0, 3, 4], frame[0, 0, 3, 5] = 1.0 - share, share
        x = encoder(frame).x[0, 0]
        centres.append(float((x * torch.arange(8)).sum() / x.sum()))
    np.testing.assert_allclose(centres, [4.0, 4.25, 4.5, 4.75], atol=1e-6)


def test_foreground_maps_draw_a_box_exactly() -> None:
    """The rank-one picture y x^T / mass of a uniform box is the box (at the renderer's half resolution)."""
    frame = torch.zeros(1, 1, 8, 8)
    frame[0, 0, 2:4, 4:8] = 0.5
    objects = ForegroundProjections(1, (8, 8))(frame)
    encoder = ForegroundProjections(1, (8, 8))
    torch.testing.assert_close(encoder.maps(objects), torch.nn.functional.avg_pool2d(frame, 2))
    # an empty frame draws nothing (and does not divide by zero)
    assert encoder.maps(encoder(torch.zeros(1, 1, 8, 8))).abs().max() == 0


def test_foreground_path_reconstructs_a_small_dot_the_plain_vae_smudges() -> None:
    """With the same short training, the foreground path draws a 2x2 dot where it is; the plain VAE does worse."""
    frames, _ = dot_frames(512, seed=0)
    test, test_cols = dot_frames(200, seed=1)
    errors = {}
    for path in (False, True):
        torch.manual_seed(0)
        model = build_model("vae", input_shape=(1, 32, 32), encoder_layers=[[8, 4, 2, 1], [16, 4, 2, 1]],
                            hidden_dim=32, latent_dim=4, foreground_projections=path)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(200):
            batch = torch.randint(0, len(frames), (64,))
            loss = model.training_loss(frames[batch], 1.0 + 19.0 * (frames[batch] > 0.5).float()).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            recon = model.reconstruct(test)
        errors[path] = float(((recon - test) ** 2 * (test > 0.5)).sum() / (test > 0.5).sum())
        if path:
            peak_cols = recon[:, 0].amax(1).argmax(-1).numpy()
            assert np.mean(np.abs(peak_cols - (test_cols + 0.5)) <= 1) > 0.95
    assert errors[True] < 0.5 * errors[False], errors


def test_two_object_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="choose one"):
        build_model("vae", input_shape=(1, 84, 84), object_channels=2, foreground_projections=True)


def paddle_frames(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Pong-like frames: a 4-pixel paddle at a random row on the left and another on the right, same colour.

    Their row sums overlap in kind: only a partition of the foreground says which rows are whose."""
    rng = np.random.default_rng(seed)
    frames = torch.zeros(n, 1, size, size)
    left, right = rng.integers(2, size - 6, n), rng.integers(2, size - 6, n)
    for i in range(n):
        frames[i, 0, left[i]:left[i] + 4, 3] = 0.8
        frames[i, 0, right[i]:right[i] + 4, size - 4] = 0.8
    return frames, left, right


def test_part_statistics_are_each_parts_mass_centre_and_spread() -> None:
    """With the partition fixed by hand (left half: part 0, right half: part 1), each part measures its own box."""
    encoder = ForegroundProjections(in_channels=1, input_hw=(8, 10), num_parts=2)
    with torch.no_grad():
        for parameter in encoder.part_net.parameters():
            parameter.zero_()
        encoder.part_prior.fill_(-50.0)
        encoder.part_prior[0, :, :2] = encoder.part_prior[1, :, 3:] = 50.0
    frame = torch.zeros(1, 1, 8, 10)
    frame[0, 0, 1:3, 1] = 0.5   # left: 2 pixels, rows 1-2, column 1
    frame[0, 0, 4:8, 8] = 1.0   # right: 4 pixels, rows 4-7, column 8
    objects = encoder(frame)
    assert objects.parts.shape == (1, 2, PART_STATS) and encoder.latent_dim == 8 + 10 + 2 * PART_STATS
    xs, ys = torch.linspace(-1, 1, 10), torch.linspace(-1, 1, 8)
    expected = torch.tensor([
        [1.0, xs[1], ys[1:3].mean(), 0.0, ys[1:3].std(unbiased=False)],
        [4.0, xs[8], ys[4:8].mean(), 0.0, ys[4:8].std(unbiased=False)],
    ])
    torch.testing.assert_close(objects.parts[0], expected, atol=2e-3, rtol=0)
    # the sums still hold the whole foreground, and everything round-trips through the flat latent
    assert float(objects.x.sum()) == pytest.approx(5.0)
    for a, b in zip(ObjectProjections.unflatten(objects.flatten(), 1, encoder.grid, num_parts=2), objects):
        torch.testing.assert_close(a, b)


def test_part_blobs_hold_each_parts_mass_at_its_centre() -> None:
    encoder = ForegroundProjections(in_channels=1, input_hw=(16, 16), num_parts=2)
    parts = torch.tensor([[[2.0, -0.5, 0.5, 0.1, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0]]])
    maps = encoder.maps(ObjectProjections(torch.zeros(1, 1, 16), torch.zeros(1, 1, 16), parts))
    assert maps.shape == (1, 3, 8, 8)
    blob = maps[0, 1]
    assert float(blob.sum()) == pytest.approx(2.0 / 4)  # the mass, as the average-pooled foreground holds it
    row, col = divmod(int(blob.argmax()), 8)
    assert (row, col) in {(5, 2), (6, 2)}  # y = 0.5 and x = -0.5 on the half-resolution grid
    assert maps[0, 2].abs().max() == 0  # an empty part draws nothing


def test_training_separates_objects_that_share_rows_into_parts() -> None:
    """Reconstruction teaches the partition to give each paddle its own part; at random init parts mix them."""
    frames, _, _ = paddle_frames(1024, seed=0)
    test, left, right = paddle_frames(300, seed=1)

    def best_tracking(model: torch.nn.Module) -> list[float]:
        """Per paddle, how well the best part's centre follows its row (|correlation|)."""
        with torch.no_grad():
            centres = model.object_encoder(test).parts[..., 2].numpy()
        return [max(abs(np.corrcoef(centres[:, k], rows)[0, 1]) for k in range(2)) for rows in (left, right)]

    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 32, 32), encoder_layers=[[8, 4, 2, 1], [16, 4, 2, 1]],
                        hidden_dim=32, latent_dim=4, foreground_parts=2, **SUMS)
    assert min(best_tracking(model)) < 0.9
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        batch = frames[torch.randint(0, len(frames), (64,))]
        loss = model.training_loss(batch, 1.0 + 19.0 * (batch > 0.5).float()).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert min(best_tracking(model)) > 0.99


def test_parts_need_the_foreground_projections() -> None:
    with pytest.raises(ValueError, match="foreground_projections=true or foreground_parts=0"):
        build_model("vae", input_shape=(1, 84, 84), foreground_projections=False, foreground_parts=2)
    with pytest.raises(ValueError, match="foreground_parts must be >= 0"):
        build_model("vae", input_shape=(1, 84, 84), foreground_parts=-1)


@pytest.mark.parametrize("hw", [(8, 10), (9, 7)])
def test_parts_share_out_the_whole_foreground_at_any_frame_size(hw: tuple[int, int]) -> None:
    """With the rest switched off, the parts' masses add up to the foreground's, odd edges included, and each
    pixel's shares (what parts.png draws) sum to one."""
    torch.manual_seed(0)
    encoder = ForegroundProjections(in_channels=1, input_hw=hw, num_parts=3)
    with torch.no_grad():
        torch.nn.init.normal_(encoder.part_net[-1].weight)
        encoder.part_prior[-1] = -1e4
    frames = torch.rand(4, 1, *hw)
    objects = encoder(frames)
    torch.testing.assert_close(objects.parts[..., 0].sum(-1), objects.x.sum((-2, -1)))
    shares = encoder.part_shares(frames)
    assert shares.shape == (4, 3, *hw)
    torch.testing.assert_close(shares.sum(1), torch.ones(4, *hw))


@pytest.mark.parametrize("hw", [(84, 84), (9, 7), (85, 63)])
def test_part_statistics_are_the_moments_of_the_shared_out_foreground(hw: tuple[int, int]) -> None:
    """The block-wise computation gives the moments of each pixel's share times its foreground, the picture
    parts.png draws, for any partition and any frame size."""
    torch.manual_seed(0)
    encoder = ForegroundProjections(in_channels=2, input_hw=hw, num_parts=4)
    with torch.no_grad():
        torch.nn.init.normal_(encoder.part_net[-1].weight)
        encoder.part_prior.normal_()
        encoder.background.uniform_()
    frames = torch.rand(3, 2, *hw)
    weights = encoder.part_shares(frames) * (frames - encoder.background).abs().sum(1, keepdim=True)
    along_x, along_y = weights.sum(-2), weights.sum(-1)
    mass = along_x.sum(-1)
    centre_x, spread_x = weighted_moments(along_x, encoder.coords_x, mass)
    centre_y, spread_y = weighted_moments(along_y, encoder.coords_y, mass)
    expected = torch.stack([mass, centre_x, centre_y, spread_x, spread_y], dim=-1)
    torch.testing.assert_close(encoder(frames).parts, expected, rtol=1e-4, atol=1e-4)


def test_unflatten_refuses_a_latent_of_the_wrong_size() -> None:
    flat = torch.zeros(2, 84 + 84 + 6 * PART_STATS)
    assert ObjectProjections.unflatten(flat, 1, (84, 84), num_parts=6).parts.shape == (2, 6, PART_STATS)
    with pytest.raises(ValueError, match=r"shape \(N, 168\).*got \(2, 198\)"):
        ObjectProjections.unflatten(flat, 1, (84, 84))


def test_cells_tell_which_column_goes_with_which_row() -> None:
    """Two dots at (top, left) and (bottom, right) have the same row and column sums as two at (top, right)
    and (bottom, left); the grid of cells tells them apart."""
    encoder = ForegroundProjections(in_channels=1, input_hw=(12, 12), cells=3)
    frames = torch.zeros(2, 1, 12, 12)
    frames[0, 0, 1, 2] = frames[0, 0, 10, 9] = 1.0
    frames[1, 0, 1, 9] = frames[1, 0, 10, 2] = 1.0
    a, b = encoder(frames[:1]), encoder(frames[1:])
    torch.testing.assert_close(a.x, b.x)
    torch.testing.assert_close(a.y, b.y)
    expected = torch.zeros(2, 3, 3)
    expected[0, 0, 0] = expected[0, 2, 2] = expected[1, 0, 2] = expected[1, 2, 0] = 1.0
    torch.testing.assert_close(torch.cat([a.cells, b.cells]), expected)


@pytest.mark.parametrize(("hw", "cells"), [((84, 84), 7), ((9, 7), 3), ((85, 63), 10), ((5, 5), 5)])
def test_cells_hold_the_whole_foreground_at_any_frame_size(hw: tuple[int, int], cells: int) -> None:
    """Each pixel lies in exactly one cell, so the cells add up to the foreground, and a lone pixel lands in
    the cell of its place."""
    torch.manual_seed(0)
    encoder = ForegroundProjections(in_channels=2, input_hw=hw, cells=cells)
    with torch.no_grad():
        encoder.background.uniform_()
    frames = torch.rand(3, 2, *hw)
    objects = encoder(frames)
    assert objects.cells.shape == (3, cells, cells) and encoder.latent_dim == sum(hw) + cells * cells
    torch.testing.assert_close(objects.cells.sum((-2, -1)), objects.x.sum((-2, -1)))
    dot = torch.zeros(1, 1, *hw)
    row, col = hw[0] - 1, hw[1] // 2
    dot[0, 0, row, col] = 0.5
    found = ForegroundProjections(1, hw, cells=cells)(dot).cells[0]
    assert float(found[cells - 1, col * cells // hw[1]]) == 0.5 and float(found.sum()) == 0.5


@pytest.mark.parametrize(("size", "cells"), [(84, 14), (85, 10), (7, 3), (5, 5), (9, 1)])
def test_tent_cells_keep_a_lone_pixels_place_to_a_fraction_of_a_cell(size: int, cells: int) -> None:
    """Tent cells share each pixel between the two nearest cell centres: every pixel is shared out whole,
    and the cells' centre of mass is the pixel's own place wherever it lies between the outer centres,
    where box cells know only which cell it is in."""
    tent, box = cell_assignment(size, cells, "tent"), cell_assignment(size, cells, "box")
    torch.testing.assert_close(tent.sum(0), torch.ones(size))
    assert int((tent > 0).sum(0).max()) <= 2
    place = (torch.arange(size) + 0.5) * cells / size - 0.5  # each pixel in units of cell centres
    inside = (place >= 0) & (place <= cells - 1)
    centre_of_mass = (torch.arange(cells, dtype=torch.float32)[:, None] * tent).sum(0)
    torch.testing.assert_close(centre_of_mass[inside], place[inside])
    torch.testing.assert_close(centre_of_mass[~inside], place[~inside].clamp(0, cells - 1))
    # neighbours in one box cell (between the outer centres): box cannot tell them apart, tent can
    alike = [i for i in range(size - 1) if inside[i] and inside[i + 1] and torch.equal(box[:, i], box[:, i + 1])]
    assert len(alike) >= (size - 2 * cells if cells > 1 else 0)
    assert all(not torch.equal(tent[:, i], tent[:, i + 1]) for i in alike)
    with pytest.raises(ValueError, match=r"cell kernel must be one of \('box', 'tent'\), got 'gauss'"):
        cell_assignment(size, cells, "gauss")


def test_tent_cells_hold_the_whole_foreground_and_draw_it_back_whole() -> None:
    encoder = ForegroundProjections(in_channels=1, input_hw=(20, 16), cells=4, sums=False, cell_kernel="tent")
    frames = torch.rand(3, 1, 20, 16)
    objects = encoder(frames)
    torch.testing.assert_close(objects.cells.sum((-2, -1)), frames.sum((-3, -2, -1)))
    picture = encoder.maps(objects)  # half resolution, holding the mass / 4 as the pooled frames do
    torch.testing.assert_close(picture.sum((-3, -2, -1)) * 4, frames.sum((-3, -2, -1)))
    with pytest.raises(ValueError, match="foreground_cell_kernel must be one of"):
        build_model("vae", input_shape=(1, 84, 84), foreground_cells=7, foreground_cell_kernel="triangle")


def test_signed_cells_add_the_ball_alike_in_front_of_anything() -> None:
    """Breakout's ball is as bright as the red bricks: in a hole it knocked in the wall, its distance from the
    background (the intact wall) is 0, less than the empty hole's, so the distance cells see it there as a dip,
    the opposite of the same ball below the wall. Signed cells sum the frame minus the background: the ball
    adds its own intensity in the hole as on the black background below the wall."""
    background = torch.zeros(1, 12, 12)
    background[0, 0:4] = 0.43  # a wall of bricks as bright as the ball
    hole = background.clone()
    hole[0, 0:4, 0:6] = 0.0  # bricks knocked out of the wall's left half
    in_hole, below = hole.clone(), hole.clone()
    in_hole[0, 2, 2] = 0.43  # the ball inside the hole
    below[0, 8, 2] = 0.43    # the ball below the wall
    frames = torch.stack([hole, in_hole, below])
    for signed, ball_in_hole in ((False, -0.43), (True, 0.43)):
        encoder = ForegroundProjections(1, (12, 12), cells=3, sums=False, cell_kernel="tent", signed_cells=signed)
        with torch.no_grad():
            encoder.background.copy_(background)
        cells = encoder(frames).cells
        torch.testing.assert_close((cells[1] - cells[0]).sum(), torch.tensor(ball_in_hole))
        torch.testing.assert_close((cells[2] - cells[0]).sum(), torch.tensor(0.43))  # below the wall both see it
    # signed cells are linear in the frame: the hole counts as the bricks it lacks, the ball as itself
    torch.testing.assert_close(cells[0].sum(), torch.tensor(-0.43 * 4 * 6))
    torch.testing.assert_close(encoder(frames[1:2] + frames[2:3] - frames[0:1]).cells[0],
                               cells[1] + cells[2] - cells[0])
    model = build_model("vae", input_shape=(1, 84, 84), foreground_cells=14, foreground_sums=False,
                        foreground_cell_kernel="tent", foreground_cells_signed=True)
    assert model.describe_latent() == "32-d + 14x14 tent signed foreground cells" and model.cells().signed
    assert build_model("vae", input_shape=(1, 84, 84)).cells() == model.cells()  # the default
    assert not build_model("vae", input_shape=(1, 84, 84), foreground_cells_signed=False).cells().signed
    sums = build_model("vae", input_shape=(1, 84, 84), foreground_cells_signed=True, **SUMS)  # no cells to sign
    assert sums.cells() is None and not sums.config.foreground_cells_signed


def test_cell_picture_is_the_pooled_foreground_when_cells_are_the_pooling_blocks() -> None:
    """With 2x2-pixel cells the cells' picture is exactly the renderer's half-resolution foreground."""
    encoder = ForegroundProjections(in_channels=1, input_hw=(8, 8), cells=4)
    frames = torch.rand(2, 1, 8, 8)
    maps = encoder.maps(encoder(frames))
    assert maps.shape == (2, 2, 4, 4) and encoder.map_channels == 2
    torch.testing.assert_close(maps[:, 1:], torch.nn.functional.avg_pool2d(frames, 2))


def test_cells_round_trip_through_the_flat_latent_and_refuse_bad_sizes() -> None:
    torch.manual_seed(0)
    encoder = ForegroundProjections(in_channels=1, input_hw=(16, 16), num_parts=2, cells=4)
    objects = encoder(torch.rand(2, 1, 16, 16))
    flat = objects.flatten()
    assert flat.shape == (2, 16 + 16 + 2 * PART_STATS + 16)
    for a, b in zip(ObjectProjections.unflatten(flat, 1, encoder.grid, num_parts=2, cells=4), objects):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"\+ 2 x 5 part statistics \+ 3 x 3 cells\), got \(2, 58\)"):
        ObjectProjections.unflatten(flat, 1, encoder.grid, num_parts=2, cells=3)
    plain = build_model("vae", input_shape=(1, 84, 84), foreground_projections=False, foreground_cells=7)
    assert plain.describe_latent() == "32-d" and plain.cells() is None  # no foreground path, so no cells
    with pytest.raises(ValueError, match=r"foreground_cells must be between 0 and the frame's smaller side \(63\)"):
        build_model("vae", input_shape=(1, 85, 63), foreground_cells=64)


def test_a_foreground_path_without_sums_keeps_its_cells_and_has_no_projection_layout() -> None:
    model = build_model("vae", input_shape=(1, 84, 84), foreground_cell_kernel="box", foreground_cells_signed=False)
    assert model.describe_latent() == "32-d + 14x14 foreground cells" and model.projections() is None
    with pytest.raises(ValueError, match="foreground_sums=false leaves the foreground path empty"):
        build_model("vae", input_shape=(1, 84, 84), foreground_cells=0)
