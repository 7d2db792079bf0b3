"""The support code every chapter relies on: checks, data, training, cost, pictures, source."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attncourse
from attncourse._checks import check_choice, check_divisible, check_input, check_positive_int
from attncourse.cost import cost_table, count_flops, count_parameters, measure
from attncourse.data import context_bars, cue_ranked_first, cued_bars
from attncourse.nets import TinyNet
from attncourse.plot import capture_gates, recording
from attncourse.show import show_source, source_of
from attncourse.train import Comparison, History, compare, fit


def test_gate_accepts_any_shape_of_float_logits_and_refuses_the_rest():
    from attncourse.layers import Gate

    gate = Gate(kind="spatial")
    for shape in [(2, 5), (1, 1, 7, 5), (3, 2, 4)]:
        torch.testing.assert_close(gate(torch.zeros(shape, dtype=torch.float64)), torch.full(shape, 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^Gate expected a floating-point tensor of logits, got a torch.int64 tensor$"):
        gate(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^Gate expected a floating-point tensor of logits, got list$"):
        gate([0.0, 1.0])


def test_check_input_messages():
    with pytest.raises(ValueError, match=r"^Mod expected input of shape \(B, 3, H, W\), got \(1, 4, 2, 2\)$"):
        check_input("Mod", torch.zeros(1, 4, 2, 2), 3)
    with pytest.raises(ValueError, match=r"Mod expected spatial size \(H x W\) of at least \(3, 3\), got \(2, 5\)"):
        check_input("Mod", torch.zeros(1, 3, 2, 5), 3, min_size=(3, 3))
    with pytest.raises(ValueError, match=r"Mod expected a 3-D input of shape \(B, N, 8\)"):
        check_input("Mod", torch.zeros(1, 8), 8, layout="B N C")
    x = torch.zeros(1, 3, 2, 2)
    assert check_input("Mod", x, 3) is x


def test_argument_checks():
    assert check_positive_int("M", "k", 3) == 3
    for bad in [0, -1, 1.5, True, None]:
        with pytest.raises(ValueError, match="M expected k"):
            check_positive_int("M", "k", bad)
    with pytest.raises(ValueError, match="M expected mode to be one of"):
        check_choice("M", "mode", "x", ["a", "b"])
    with pytest.raises(ValueError, match="channels=10 to be divisible by groups=4"):
        check_divisible("M", "channels", 10, "groups", 4)


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already taken"):
        attncourse.register("se")(type("Other", (nn.Module,), {}))


@pytest.mark.parametrize("make", [context_bars, cued_bars])
def test_datasets_are_deterministic_and_balanced(make):
    a, b = make(200, 100, seed=3), make(200, 100, seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, make(200, 100, seed=4).x_train)
    assert a.x_train.shape == (200, 2, 16, 16) and a.num_classes == 2
    assert 0.35 < a.y_train.float().mean() < 0.65


def test_context_bars_label_is_orientation_xor_context():
    d = context_bars(400, 1, context_shift=3.0, bar_noise=0.0, seed=0)   # context and bars made obvious
    context = (d.x_train[:, 1].mean((1, 2)) > 0).long()
    rows = d.x_train[:, 0].sum(2).amax(1)                     # a horizontal bar piles up in one row
    cols = d.x_train[:, 0].sum(1).amax(1)
    orient = (cols > rows).long()
    assert torch.equal(orient ^ context, d.y_train)


def test_cue_ranked_first_counts_the_images_whose_map_peaks_on_the_cued_bar():
    clean = cued_bars(0, 40, noise=0.0, seed=2).x_test
    assert cue_ranked_first(clean[:, 1], clean) == 1.0                      # the cue blob itself
    distractors_only = clean[:, 0].clone()
    blob_cell = (clean[:, 1:2] > 0.45).float()                               # near the cue's centre
    assert cue_ranked_first(distractors_only - 10 * blob_cell[:, 0], clean) == 0.0
    half = torch.where(torch.arange(40)[:, None, None] < 10, clean[:, 1], -clean[:, 1])
    assert cue_ranked_first(half, clean) == 0.25
    with pytest.raises(ValueError, match=r"cue_ranked_first expected maps \(N, H, W\) and clean images"):
        cue_ranked_first(clean[:, :1], clean)
    with pytest.raises(ValueError, match="the cue's cell holds no bar"):
        cue_ranked_first(clean[:, 1], torch.stack([torch.zeros_like(clean[:, 0]), clean[:, 1]], 1))


def test_fit_is_deterministic_and_learns():
    data = context_bars(300, 200, context_shift=2.0, seed=0)
    make = lambda: TinyNet(2, 2, widths=(8,), attn="se", attn_kwargs={"reduction": 2})
    _, h1 = fit(make, data, seed=1, epochs=3, progress=False)
    _, h2 = fit(make, data, seed=1, epochs=3, progress=False)
    assert h1.train_loss == h2.train_loss and h1.test_acc == h2.test_acc
    assert h1.train_loss[-1] < h1.train_loss[0]


def test_fit_without_tracking_trains_the_same_model():
    """track=False only skips the per-epoch test evaluations: same weights, same final accuracy."""
    data = context_bars(200, 100, seed=0)
    make = lambda: TinyNet(2, 2, widths=(8,), attn="cbam", attn_kwargs={"reduction": 2})
    m1, h1 = fit(make, data, seed=3, epochs=3, progress=False)
    m2, h2 = fit(make, data, seed=3, epochs=3, progress=False, track=False)
    assert len(h1.test_acc) == 3 and len(h2.test_acc) == 1
    assert h2.final_acc == h1.final_acc and h2.train_loss == h1.train_loss
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_compare_collects_every_variant_and_seed():
    data = context_bars(64, 32, seed=0)
    res = compare({"a": lambda: TinyNet(2, 2, widths=(4,)), "b": lambda: TinyNet(2, 2, widths=(4,), attn="se", attn_kwargs={"reduction": 2})},
                  data, seeds=(0, 1), epochs=1, progress=False, keep_models=True)
    assert list(res.histories) == ["a", "b"] and res.accuracies("b").shape == (2,)
    assert len(res.models["b"]) == 2 and not res.models["b"][0].training
    assert "| b |" in res.table() and res.parameters["b"] > res.parameters["a"]


def test_comparison_pick_and_merge():
    h = {n: [History([0.5], [a], 1.0) for a in accs] for n, accs in {"a": [0.1, 0.2, 0.3], "b": [0.4, 0.5, 0.6]}.items()}
    full = Comparison([0, 1, 2], h, {"a": 10, "b": 20}, {"b": ["m0", "m1", "m2"]})
    part = full.pick({"a (stored)": "a"}, seeds=(0, 2))
    assert part.seeds == [0, 2] and list(part.histories) == ["a (stored)"] and part.parameters == {"a (stored)": 10}
    assert part.accuracies("a (stored)").tolist() == [0.1, 0.3] and part.models == {}
    b = full.pick(["b"], seeds=(0, 2))
    assert b.models == {"b": ["m0", "m2"]}
    both = part | b
    assert list(both.histories) == ["a (stored)", "b"] and both.accuracies("b").tolist() == [0.4, 0.6]
    with pytest.raises(ValueError, match="same seeds"):
        part | full.pick(["b"])
    with pytest.raises(ValueError, match="variants"):
        full.pick(["c"])
    with pytest.raises(ValueError, match="seeds"):
        full.pick(["a"], seeds=(3,))


def test_measure_times_only_when_asked_and_cost_table_lists_every_row():
    conv, x = nn.Conv2d(3, 8, 3, bias=False), torch.randn(1, 3, 6, 5)
    untimed, timed = measure(conv, x), measure(conv, x, repeats=2, warmup=1)
    assert untimed.seconds is None and timed.seconds > 0
    assert (timed.parameters, timed.flops) == (untimed.parameters, untimed.flops) == (216, 2 * 216 * 4 * 3)
    table = cost_table({"conv": timed, "untimed": untimed}).splitlines()
    assert len(table) == 3 and table[1].split()[:3] == ["conv", "216", "0.01"] and len(table[2].split()) == 3


def test_tinynet_accepts_a_factory_and_checks_its_input():
    net = TinyNet(2, 3, widths=(8, 8), attn=lambda c: attncourse.SqueezeExcite(c, reduction=2), pool_every=1)
    assert net(torch.randn(2, 2, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="TinyNet expected input of shape"):
        net(torch.randn(2, 3, 8, 8))


def test_cost_helpers():
    lin = nn.Linear(10, 5)
    assert count_parameters(lin) == 55
    assert count_flops(lin, torch.randn(4, 10)) == 2 * 4 * 10 * 5
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, torch.randn(1, 3, 6, 5)) == 2 * 8 * 3 * 9 * 6 * 5
    assert measure(conv, torch.randn(1, 3, 6, 5)).parameters == 216


def test_capture_gates_finds_every_gate_and_removes_its_hooks():
    net = TinyNet(2, 2, widths=(8, 16), attn="se", attn_kwargs={"reduction": 2})
    gates = capture_gates(net, torch.randn(3, 2, 7, 5))
    assert {k: v.shape for k, v in gates.items()} == {
        "features.0.attn.gate": (3, 8), "features.1.attn.gate": (3, 16)}
    with recording(net) as rec:
        pass
    assert rec == {}
    assert all(not g._forward_hooks for g in net.modules() if isinstance(g, attncourse.Gate))


def test_show_source_shows_the_real_class():
    src = source_of(attncourse.SqueezeExcite)
    assert "class SqueezeExcite" in src and '"""' in src
    assert '"""' not in source_of(attncourse.SqueezeExcite, docstring=False)
    md = show_source(attncourse.SqueezeExcite)
    assert "attncourse.channel.se" in md.data and "def forward" in md.data


def test_peak_memory_sees_the_n_by_n_matrix_and_nothing_held_before():
    import torch.nn.functional as F

    from attncourse.cost import peak_memory

    n, d = 256, 16
    q = torch.randn(1, 1, n, d)
    naive = peak_memory(lambda: (q @ q.transpose(-1, -2)).softmax(-1) @ q)
    assert naive >= 2 * n * n * 4  # the logits and the softmax live together
    fused = peak_memory(lambda: F.scaled_dot_product_attention(q, q, q))
    assert fused < n * n * 4  # no N x N tensor is ever returned by an operation
    assert peak_memory(lambda: q.sum()) == 4  # one float32 scalar; q itself is not counted
    y = torch.randn(1000)
    assert peak_memory(lambda: y.view(10, 100).t()) == 0  # views of existing memory cost nothing


def test_same_shapes_places_two_far_apart_shapes_and_labels_same_or_not():
    from attncourse.data import SHAPES, same_shapes

    split, corners = same_shapes(60, 40, noise=0.0, seed=3, return_positions=True)
    x = torch.cat([split.x_train, split.x_test])
    y = torch.cat([split.y_train, split.y_test])
    assert x.shape == (100, 2, 12, 12) and corners.shape == (100, 2, 2)
    assert 0.3 < y.float().mean() < 0.7
    assert ((corners[:, 0] - corners[:, 1]).abs().amax(1) >= 8).all()  # far apart
    assert (x[:, 1] == 0).all()  # no colours by default: the shapes are in channel 0
    kinds = list(SHAPES.values())[:2]
    for i in range(100):
        found = []
        for r, c in corners[i].tolist():
            patch = x[i, 0, r : r + 3, c : c + 3]
            found.append([k for k, s in enumerate(kinds) if torch.equal(patch, s)])
        assert all(len(f) == 1 for f in found), f"image {i}: a shape is not one of the kinds"
        assert int(y[i]) == int(found[0] == found[1])
    assert x[:, 0].sum().item() == 100 * 2 * 5  # exactly two five-pixel shapes, nothing else
    again = same_shapes(60, 40, noise=0.0, seed=3)
    assert torch.equal(again.x_train, split.x_train)
    with pytest.raises(ValueError, match="same_shapes"):
        same_shapes(10, 10, size=8, min_distance=8)


def test_tinynet_puts_attention_only_in_the_chosen_blocks():
    net = TinyNet(2, 2, widths=(16, 32, 32), attn="se", pool_every=2, attn_blocks=[1])
    blocks = [m for m in net.features if hasattr(m, "attn")]
    assert [type(b.attn).__name__ for b in blocks] == ["Identity", "SqueezeExcite", "Identity"]
    assert isinstance(net.features[2], nn.MaxPool2d)  # the pool after the second block
    assert net(torch.randn(2, 2, 12, 12)).shape == (2, 2)
    with pytest.raises(ValueError, match="TinyNet.*attn_blocks"):
        TinyNet(2, 2, widths=(16, 32), attn="se", attn_blocks=[2])


def test_capture_input_returns_what_a_submodule_received_and_restores_the_mode():
    from attncourse.cost import time_forward
    from attncourse.plot import capture_input

    net = TinyNet(2, 2, widths=(4, 8), attn="se", attn_kwargs={"reduction": 2}).train()
    x = torch.randn(3, 2, 6, 5)
    block = net.features[1]
    got = capture_input(net, block.attn, x)
    net.eval()
    with torch.no_grad():
        expected = block.bn(block.conv(net.features[0](x)))  # what the second block's module attends over
    torch.testing.assert_close(got, expected)
    net.train()
    capture_input(net, block.attn, x)
    assert net.training  # the mode is restored
    with pytest.raises(ValueError, match="capture_input.*never received"):
        capture_input(net, nn.Identity(), x)
    assert time_forward(net, x) > 0


def test_map_helpers_label_the_colour_scale_and_mark_the_query():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attncourse.plot import FONT, add_colorbar, mark_query, outline_region

    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        im = ax.imshow(torch.rand(6, 8), vmin=0, vmax=1)
    cbar = add_colorbar(im, axes.tolist(), label="attention weight")
    assert cbar.ax.get_ylabel() == "attention weight" and cbar.ax.yaxis.label.get_fontsize() == FONT
    line = mark_query(axes[0], 2, 5)
    assert line.get_xdata().tolist() == [5] and line.get_ydata().tolist() == [2]
    rect = outline_region(axes[1], 1, 3, 3, 2)
    assert rect.get_xy() == (2.5, 0.5) and (rect.get_width(), rect.get_height()) == (2, 3)
    plt.close(fig)


def test_tinynet_docstring_where_parts_three_and_four_put_attention():
    """TinyNet's docstring: in Parts III and IV's protocols the one attention module is in the
    second block, at the input's full resolution, before the first pooling."""
    from attncourse.experiments import PROTOCOLS

    for name in ("selfattn", "selfattn_far", "linear"):
        proto = PROTOCOLS[name]
        variant = next(v for v in proto.variants if v != "baseline")
        net = proto.network(variant)()
        kinds = [type(m).__name__ for m in net.features]
        assert kinds == ["ConvBlock", "ConvBlock", "MaxPool2d", "ConvBlock"], (name, kinds)
        with_attn = [i for i, m in enumerate(net.features) if m.__class__.__name__ == "ConvBlock"
                     and any(not isinstance(s, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Identity)) for s in m.children())]
        assert with_attn == [1], (name, with_attn)
    assert "the second\n            block, at the input's full resolution" in TinyNet.__doc__


def test_plot_results_fits_the_book_width_and_gives_every_variant_its_colour():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attncourse.plot import FONT, plot_results

    names = [f"variant {k}" for k in range(12)]
    histories = {n: [History([1.0, 0.5], [0.5, 0.6 + k / 100], 1.0)] for k, n in enumerate(names)}
    fig, axes = plot_results(Comparison([0], histories, {n: 0 for n in names}), histories_title="t")
    assert fig.get_figwidth() <= 7.5
    colours = {tuple(line.get_color()) for line in axes[0].get_lines() if line.get_linewidth() == 2}
    assert len(colours) == 12  # tab20 beyond ten variants: no colour used twice
    assert min(t.get_fontsize() for t in axes[1].get_xticklabels()) >= FONT
    plt.close(fig)


def test_corrupt_adds_seeded_noise_and_blurs_with_a_normalised_kernel():
    from attncourse.data import corrupt

    x = torch.zeros(2, 3, 9, 9)
    x[:, :, 4, 4] = 1.0
    n1, n2 = corrupt(x, "noise", 0.5, seed=3), corrupt(x, "noise", 0.5, seed=3)
    assert torch.equal(n1, n2) and not torch.equal(n1, corrupt(x, "noise", 0.5, seed=4))
    assert abs(float((n1 - x).std()) - 0.5) < 0.1
    b = corrupt(x, "blur", 1.0)
    assert b.shape == x.shape
    torch.testing.assert_close(b.sum(dim=(2, 3)), torch.ones(2, 3))  # the mass stays (not near the border)
    assert b[0, 0, 4, 4] == b[0, 0].max() and b[0, 0, 4, 5] == b[0, 0, 5, 4] == b[0, 0, 4, 3]  # symmetric
    g = torch.exp(-torch.tensor([0.0, 1.0]) / 2)
    assert abs(float(b[0, 0, 4, 5] / b[0, 0, 4, 4]) - float(g[1] / g[0])) < 1e-6  # a Gaussian of sigma 1
    edge = torch.zeros(1, 1, 9, 9)
    edge[0, 0, 0, 0] = 1.0
    assert float(corrupt(edge, "blur", 1.0).sum()) < 0.6  # zero padding loses mass at a corner
    torch.testing.assert_close(corrupt(edge, "blur", 1.0, padding_mode="circular").sum(), torch.tensor(1.0))  # a torus keeps it
    for bad, match in [(("fog", 1.0), "kind"), (("noise", 0), "severity"), (("noise", True), "severity")]:
        with pytest.raises(ValueError, match=match):
            corrupt(x, *bad)
    with pytest.raises(ValueError, match="N, C, H, W"):
        corrupt(x[0], "noise", 1.0)


def test_cluttered_scenes_label_is_the_red_glyphs_kind_and_half():
    from attncourse.data import GLYPHS, PALETTE, cluttered_scenes

    split, corners = cluttered_scenes(60, 40, noise=0.0, strokes=0, seed=3, return_positions=True)
    x = torch.cat([split.x_train, split.x_test])
    y = torch.cat([split.y_train, split.y_test])
    assert x.shape == (100, 3, 32, 32) and corners.shape == (100, 5, 2) and split.num_classes == 8
    assert set(y.tolist()) <= set(range(8)) and len(set(y.tolist())) >= 6
    red = torch.tensor(PALETTE["red"])
    glyphs = list(GLYPHS.values())
    for i in range(100):
        cells = {(int(r) // 8, int(c) // 8) for r, c in corners[i]}
        assert len(cells) == 5  # one glyph per 8-pixel cell: they never overlap
        r, c = corners[i, 0].tolist()
        patch = x[i, :, r : r + 5, c : c + 5]
        kind = [k for k, g in enumerate(glyphs) if torch.equal(patch, red[:, None, None] * g)]
        assert kind == [int(y[i]) // 2], f"image {i}: the target is not the red glyph of its label's kind"
        assert int(y[i]) % 2 == int(c + 2 >= 16)  # the half of the target's centre
        for r, c in corners[i, 1:].tolist():  # every distractor has green or blue: not the target's colour
            colour = x[i, :, r : r + 5, c : c + 5].amax((1, 2))
            assert colour[1:].amax() == 1 and not torch.equal(colour, red)
    noisy = cluttered_scenes(60, 40, seed=3)
    assert torch.equal(cluttered_scenes(60, 40, seed=3).x_train, noisy.x_train)  # seeded
    assert not torch.equal(cluttered_scenes(60, 40, seed=4).x_train, noisy.x_train)
    for bad in ({"distractors": 16}, {"strokes": -1}, {"noise": -0.1}):
        with pytest.raises(ValueError, match="cluttered_scenes"):
            cluttered_scenes(10, 10, **bad)
