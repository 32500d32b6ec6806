"""Losses of REFERENCE B: closed forms, where gradients go, which slices count."""

import math

import pytest
import torch
import torch.nn.functional as F

from mixseg_lite import InputError
from mixseg_lite.losses import class_kl, classification_loss, cross_modal_equivariance_loss, equivariance_loss
from mixseg_lite.transforms import Transform


OLD = "per_selected_slice"  # our first scale, kept as an option


def test_classification_loss_is_mean_of_both_views():
    scores, t_scores = torch.randn(4, 2), torch.randn(4, 2)
    targets = torch.tensor([0, 1, 1, 0])
    expected = 0.5 * (F.cross_entropy(scores, targets) + F.cross_entropy(t_scores, targets))
    assert torch.allclose(classification_loss(scores, t_scores, targets), expected)
    # Two classes, zero scores: log 2 on each view.
    assert math.isclose(float(classification_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.tensor([0, 1, 1]))),
                        math.log(2), rel_tol=1e-6)
    multi = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = 0.5 * (F.binary_cross_entropy_with_logits(scores[:2], multi)
                      + F.binary_cross_entropy_with_logits(t_scores[:2], multi))
    assert torch.allclose(classification_loss(scores[:2], t_scores[:2], multi, multilabel=True), expected)


def test_class_kl_closed_forms():
    z = torch.randn(5, 3)
    assert float(class_kl(z, z.clone())) == pytest.approx(0.0, abs=1e-6)
    # Hand computation for one slice, two classes, tau = 2.
    z_i, z_j, tau = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, -1.0]]), 2.0
    p_i = torch.softmax(z_i / tau, 1)[0].tolist()
    p_j = torch.softmax(z_j / tau, 1)[0].tolist()
    kl = sum(pj * math.log(pj / pi) for pi, pj in zip(p_i, p_j))
    assert float(class_kl(z_i, z_j, tau=tau)) == pytest.approx(tau ** 2 * kl, rel=1e-5)
    # Multi-label: Bernoulli KL per class, summed.
    q_i, q_j = torch.sigmoid(z_i / tau)[0].tolist(), torch.sigmoid(z_j / tau)[0].tolist()
    bern = sum(b * math.log(b / a) + (1 - b) * math.log((1 - b) / (1 - a)) for a, b in zip(q_i, q_j))
    assert float(class_kl(z_i, z_j, tau=tau, multilabel=True)) == pytest.approx(tau ** 2 * bern, rel=1e-5)
    assert float(class_kl(z_i, z_j)) > 0


def test_class_kl_detaches_the_other_modality():
    z_i = torch.randn(4, 2, requires_grad=True)
    z_j = torch.randn(4, 2, requires_grad=True)
    class_kl(z_i, z_j).backward()
    assert z_i.grad is not None and z_i.grad.abs().sum() > 0
    assert z_j.grad is None


def test_equivariance_loss_value_and_positive_slices_only():
    # Values at our first scale (per selected slice); the default scale is tested further down.
    a, b = torch.zeros(3, 2, 4, 4), torch.zeros(3, 2, 4, 4)
    b[0] += 1.0   # slice 0 differs by 1 everywhere
    b[2] += 5.0   # slice 2 differs a lot, but is negative
    positive = torch.tensor([True, True, False])
    assert float(equivariance_loss(a, b, positive, reduction=OLD)) == pytest.approx(0.5)  # (1 + 0) / 2 positive slices
    # Negative slices contribute nothing, whatever their maps.
    b2 = b.clone()
    b2[2] = 100.0
    assert float(equivariance_loss(a, b2, positive, reduction=OLD)) == pytest.approx(0.5)
    # Only valid pixels are compared, and averaged over them.
    valid = torch.zeros(1, 1, 4, 4)
    valid[..., :2, :] = 1
    b3 = torch.zeros_like(b)
    b3[0, :, 2:, :] = 7.0  # differences outside the valid frame do not count
    assert float(equivariance_loss(a, b3, positive, valid, OLD)) == 0.0


def test_equivariance_loss_empty_positive_set_is_zero_with_gradient():
    a = torch.randn(2, 2, 4, 4, requires_grad=True)
    loss = equivariance_loss(a, torch.randn(2, 2, 4, 4), torch.tensor([False, False]))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(a.grad, torch.zeros_like(a))


def test_equivariance_loss_zero_for_an_equivariant_net_and_gradient_through_both_views():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1)  # a 1x1 conv is pointwise, hence equivariant to flips and rotations
    x = torch.randn(3, 1, 8, 8)
    positive = torch.ones(3, dtype=torch.bool)
    for t in (Transform("hflip"), Transform("vflip"), Transform("rot90", k=1)):
        assert equivariance_loss(t.apply(net(x)), net(t.apply(x)), positive).item() < 1e-12
    # A net that is not equivariant (3x3 kernel without symmetry) has a positive ER, and its
    # gradient flows through both views.
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    t = Transform("hflip")
    a = t.apply(conv(x))
    a.retain_grad()
    b = conv(t.apply(x))
    b.retain_grad()
    loss = equivariance_loss(a, b, positive)
    loss.backward()
    assert loss.item() > 1e-4 and a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def _views(M=2, B=3, C=2, H=6, W=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    pi_maps = torch.rand(M, B, C, H, W, generator=g).requires_grad_(True)
    maps_pi = torch.rand(M, B, C, H, W, generator=g).requires_grad_(True)
    return pi_maps, maps_pi


def test_cmer_closed_form_for_two_modalities():
    pi_maps, maps_pi = _views()
    positive = torch.tensor([True, True, False])
    predicted = torch.tensor([[True, False, True], [True, True, True]])
    loss = cross_modal_equivariance_loss(pi_maps, maps_pi, positive, predicted, reduction=OLD)

    def n(x):
        return x / x.flatten(-2).norm(dim=-1)[..., None, None]

    def d(a, b):  # (B,) squared distance of unit-norm maps, mean over classes
        return ((n(a) - n(b)) ** 2).sum((-1, -2)).mean(-1)

    pair = [0.5 * (d(pi_maps[i], maps_pi[1 - i]) + d(maps_pi[i], pi_maps[1 - i])) for i in range(2)]
    # Modality 0 is compared on slices positive AND predicted positive by modality 1: slices 0, 1.
    assert torch.allclose(loss[0], pair[0][[0, 1]].mean())
    # Modality 1 on slices positive AND predicted positive by modality 0: slice 0 only.
    assert torch.allclose(loss[1], pair[1][[0]].mean())
    # Only the shape of the maps matters: scaling one modality's maps changes nothing.
    scale = torch.tensor([1.0, 3.0])[:, None, None, None, None]
    assert torch.allclose(cross_modal_equivariance_loss(pi_maps * scale, maps_pi * scale, positive, predicted,
                                                                     reduction=OLD), loss)
    # Maps that agree across modalities and views give zero.
    same = torch.rand(1, 3, 2, 6, 6).expand(2, -1, -1, -1, -1)
    assert float(cross_modal_equivariance_loss(same, same.clone(), positive, predicted).abs().max()) < 1e-10


def test_cmer_gradients_reach_only_own_modality():
    pi_maps, maps_pi = _views()
    positive = torch.ones(3, dtype=torch.bool)
    predicted = torch.ones(2, 3, dtype=torch.bool)
    loss = cross_modal_equivariance_loss(pi_maps, maps_pi, positive, predicted)
    # The loss of modality 0 must not send gradient to modality 1's maps (stop-gradient).
    loss[0].backward()
    assert pi_maps.grad[0].abs().sum() > 0 and maps_pi.grad[0].abs().sum() > 0
    assert pi_maps.grad[1].abs().sum() == 0 and maps_pi.grad[1].abs().sum() == 0


def test_cmer_masks_and_empty_sets():
    pi_maps, maps_pi = _views(M=3)
    positive = torch.tensor([True, False, True])
    predicted = torch.ones(3, 3, dtype=torch.bool)
    base = cross_modal_equivariance_loss(pi_maps, maps_pi, positive, predicted)
    changed = maps_pi.detach().clone()
    changed[:, 1] = 50.0 * torch.rand_like(changed[:, 1])  # a negative slice: must not matter
    assert torch.allclose(base, cross_modal_equivariance_loss(pi_maps.detach(), changed, positive, predicted))
    none = cross_modal_equivariance_loss(pi_maps, maps_pi, torch.zeros(3, dtype=torch.bool), predicted)
    assert torch.equal(none, torch.zeros(3))
    none.sum().backward()  # still attached to the graph, no NaN
    assert not torch.isnan(pi_maps.grad).any()
    # Three modalities: each averages over the two others, i.e. divides by M - 1 = 2.
    assert base.shape == (3,) and (base > 0).all()


def test_cmer_three_modalities_divides_by_m_minus_one():
    pi_maps, maps_pi = _views(M=3)
    positive = torch.ones(3, dtype=torch.bool)
    predicted = torch.ones(3, 3, dtype=torch.bool)
    loss = cross_modal_equivariance_loss(pi_maps, maps_pi, positive, predicted)
    pairwise = [cross_modal_equivariance_loss(pi_maps[[0, j]], maps_pi[[0, j]], positive, predicted[[0, j]])[0]
                for j in (1, 2)]
    assert torch.allclose(loss[0], (pairwise[0] + pairwise[1]) / 2)


def test_bad_input():
    with pytest.raises(InputError, match="at least 2 modalities"):
        cross_modal_equivariance_loss(torch.rand(1, 2, 2, 4, 4), torch.rand(1, 2, 2, 4, 4),
                                      torch.ones(2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(InputError, match="shapes differ"):
        equivariance_loss(torch.rand(2, 2, 4, 4), torch.rand(2, 2, 4, 5), torch.ones(2, dtype=torch.bool))
    with pytest.raises(InputError, match="one flag per slice"):
        equivariance_loss(torch.rand(2, 2, 4, 4), torch.rand(2, 2, 4, 4), torch.ones(3, dtype=torch.bool))
    with pytest.raises(InputError, match="tau"):
        class_kl(torch.rand(2, 2), torch.rand(2, 2), tau=0.0)
    with pytest.raises(InputError, match="one class per slice"):
        classification_loss(torch.rand(2, 2), torch.rand(2, 2), torch.zeros(2, 2))


def _unit(maps):
    return maps / maps.flatten(-2).norm(dim=-1)[..., None, None]


def test_default_cmer_is_the_reference_mean_over_every_element():
    """The formula of gaurav104/WSS-CMER's CMER_loss (torch.mean of the squared difference of
    spatially L2-normalised maps), with every slice selected, one channel, no valid mask and the
    default arguments."""
    torch.manual_seed(0)
    pi_maps, maps_pi = torch.rand(2, 6, 1, 8, 8), torch.rand(2, 6, 1, 8, 8)
    everything = torch.ones(6, dtype=torch.bool)
    cmer = cross_modal_equivariance_loss(pi_maps, maps_pi, everything, torch.ones(2, 6, dtype=torch.bool))
    for i, j in ((0, 1), (1, 0)):
        expected = 0.5 * (((_unit(pi_maps[i]) - _unit(maps_pi[j])) ** 2).mean()
                          + ((_unit(maps_pi[i]) - _unit(pi_maps[j])) ** 2).mean())
        assert float(cmer[i]) == pytest.approx(float(expected), rel=1e-6)
    ours = cross_modal_equivariance_loss(pi_maps, maps_pi, everything, torch.ones(2, 6, dtype=torch.bool),
                                         reduction="per_selected_slice")
    torch.testing.assert_close(ours, cmer * 64)  # the old scale: H * W times stronger when every slice counts


def test_cmer_reference_counts_unselected_slices_as_zero_and_selects_each_pair_by_its_view():
    torch.manual_seed(1)
    pi_maps, maps_pi = torch.rand(2, 4, 1, 5, 5), torch.rand(2, 4, 1, 5, 5)
    positive = torch.tensor([True, True, False, True])
    on_pi = torch.tensor([[True, False, True, True], [True, True, True, False]])
    on_x = torch.tensor([[False, False, True, True], [True, True, False, True]])
    cmer = cross_modal_equivariance_loss(pi_maps, maps_pi, positive, on_pi, reduction="reference",
                                         predicted_positive_original=on_x)
    i, j = 0, 1
    s1, s2 = positive & on_pi[j], positive & on_x[j]
    d1 = ((_unit(pi_maps[i]) - _unit(maps_pi[j])) ** 2).sum(dim=(1, 2, 3)) * s1
    d2 = ((_unit(maps_pi[i]) - _unit(pi_maps[j])) ** 2).sum(dim=(1, 2, 3)) * s2
    assert float(cmer[i]) == pytest.approx(float(0.5 * (d1.sum() + d2.sum()) / (4 * 25)), rel=1e-6)


def test_default_er_is_the_reference_mean_over_the_whole_batch():
    torch.manual_seed(2)
    a, b = torch.rand(4, 1, 6, 6), torch.rand(4, 1, 6, 6)
    positive = torch.tensor([True, False, True, False])
    reference = equivariance_loss(a, b, positive)
    expected = (((a - b) ** 2)[positive]).sum() / a.numel()
    assert float(reference) == pytest.approx(float(expected), rel=1e-6)
    # the old scale is B / |P| = 2 times stronger here (no valid mask)
    assert float(equivariance_loss(a, b, positive, reduction="per_selected_slice")) == pytest.approx(
        2 * float(reference), rel=1e-6)
    with pytest.raises(InputError, match="unknown reduction 'sum'"):
        equivariance_loss(a, b, positive, reduction="sum")


def test_balanced_class_weights_and_the_weighted_tag_loss():
    from mixseg_lite.losses.cam import balanced_class_weights

    targets = torch.tensor([0, 0, 0, 1])
    weights = balanced_class_weights(targets)
    assert torch.allclose(weights, torch.tensor([4 / 6, 4 / 2]))  # N / (C * n_c)
    scores = torch.randn(4, 2)
    per_slice = torch.nn.functional.cross_entropy(scores, targets, reduction="none")
    expected = (weights[targets] * per_slice).sum() / weights[targets].sum()
    assert torch.allclose(classification_loss(scores, scores, targets, class_weights=weights), expected)
    # the answer "no tumour" everywhere costs more once positives count as much as negatives
    always_negative = torch.tensor([[3.0, 0.0]]).repeat(4, 1)
    assert classification_loss(always_negative, always_negative, targets, class_weights=weights) > \
        classification_loss(always_negative, always_negative, targets)
    # multi-label: pos_weight = negatives / positives per class; an empty class keeps weight 1
    multi = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(balanced_class_weights(multi, multilabel=True), torch.tensor([1.0, 1.0]))
    assert torch.allclose(balanced_class_weights(multi[1:], multilabel=True), torch.tensor([2.0, 1.0]))
    with pytest.raises(InputError, match="class_weights"):
        classification_loss(scores, scores, targets, class_weights=torch.ones(3))
