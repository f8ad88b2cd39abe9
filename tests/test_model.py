"""M5: parameter count, shapes, receptive field, and equality with the original tutorial's network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from us8k_lib.model import M5, M5Config, compute_layer_table, count_parameters


class TutorialM5(nn.Module):
    """The original tutorial's network, written the way it was (fixed 32 000-sample input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 128, 80, 4)
        self.bn1 = nn.BatchNorm1d(128)
        self.pool1 = nn.MaxPool1d(4)
        self.conv2 = nn.Conv1d(128, 128, 3)
        self.bn2 = nn.BatchNorm1d(128)
        self.pool2 = nn.MaxPool1d(4)
        self.conv3 = nn.Conv1d(128, 256, 3)
        self.bn3 = nn.BatchNorm1d(256)
        self.pool3 = nn.MaxPool1d(4)
        self.conv4 = nn.Conv1d(256, 512, 3)
        self.bn4 = nn.BatchNorm1d(512)
        self.pool4 = nn.MaxPool1d(4)
        self.avgPool = nn.AvgPool1d(30)  # 32 000 samples leave 30 steps here
        self.fc1 = nn.Linear(512, 10)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.pool2(F.relu(self.bn2(self.conv2(x))))
        x = self.pool3(F.relu(self.bn3(self.conv3(x))))
        x = self.pool4(F.relu(self.bn4(self.conv4(x))))
        x = self.avgPool(x)
        x = x.permute(0, 2, 1)
        return self.fc1(x)  # [batch, 1, 10]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits(x), dim=2)


def _copy_tutorial_weights(ref: TutorialM5, model: M5) -> None:
    for i in range(4):
        block = model.blocks[i]
        block.conv.load_state_dict(getattr(ref, f"conv{i + 1}").state_dict())
        block.bn.load_state_dict(getattr(ref, f"bn{i + 1}").state_dict())
    model.fc.load_state_dict(ref.fc1.state_dict())


def _randomize_bn_stats(module: nn.Module, gen: torch.Generator) -> None:
    # Fresh BatchNorms are the identity in eval mode; random statistics make the comparison bite.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def test_parameter_count_is_the_papers_m5() -> None:
    model = M5()
    assert count_parameters(model) == 559_114
    assert count_parameters(TutorialM5()) == 559_114
    assert count_parameters(M5(M5Config(n_classes=5))) == 559_114 - 5 * 513


def test_logits_shape_for_the_standard_clip_and_other_lengths() -> None:
    model = M5().eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 32000)).shape == (3, 10)
        for length in (model.receptive_field, 4000, 16000, 48001):
            assert model(torch.randn(2, 1, length)).shape == (2, 10)


def test_feature_steps_follow_receptive_field_and_hop() -> None:
    model = M5().eval()
    assert (model.receptive_field, model.hop) == (1772, 1024)
    with torch.no_grad():
        for length in (1772, 1773, 2795, 2796, 2797, 32000, 40000):
            steps = model.features(torch.zeros(1, 1, length)).shape[-1]
            assert steps == (length - model.receptive_field) // model.hop + 1, length
        assert model.features(torch.zeros(1, 1, 32000)).shape == (1, 512, 30)


def test_too_short_or_misshaped_input_is_a_clear_error() -> None:
    model = M5()
    with pytest.raises(ValueError, match="shorter than M5's receptive field of 1772"):
        model(torch.zeros(1, 1, 1771))
    with pytest.raises(ValueError, match=r"\[batch, 1, samples\]"):
        model(torch.zeros(2, 32000))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_same_logits_as_the_tutorial_network(mode: str) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ref = TutorialM5()
    _randomize_bn_stats(ref, gen)
    model = M5()
    _copy_tutorial_weights(ref, model)
    ref.train(mode == "train")
    model.train(mode == "train")
    x = torch.randn(4, 1, 32000, generator=gen)
    with torch.no_grad():
        ours = model(x)
        theirs = ref.logits(x)[:, 0, :]
        log_probs = ref(x)[:, 0, :]
    assert ours.shape == theirs.shape == (4, 10)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(F.log_softmax(ours, dim=1), log_probs, rtol=1e-4, atol=1e-5)
    # And the two are not trivially equal (e.g. all zeros): the logits differ between clips.
    assert (ours[0] - ours[1]).abs().max() > 1e-3


def test_same_gradients_as_the_tutorial_network() -> None:
    # Pooling before the ReLU must not change training, only its speed.
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    ref, model = TutorialM5(), M5()
    _copy_tutorial_weights(ref, model)
    x = torch.randn(3, 1, 32000, generator=gen)
    y = torch.tensor([0, 3, 7])
    F.cross_entropy(model(x), y).backward()
    F.nll_loss(ref(x)[:, 0, :], y).backward()
    torch.testing.assert_close(model.blocks[0].conv.weight.grad, ref.conv1.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.blocks[3].conv.weight.grad, ref.conv4.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.fc.weight.grad, ref.fc1.weight.grad, rtol=1e-4, atol=1e-6)


def _influence(model: M5, length: int, step: int, batch: int = 4) -> torch.Tensor:
    """Input samples whose gradient on feature step ``step`` is nonzero for some random input."""
    x = torch.randn(batch, 1, length, generator=torch.Generator().manual_seed(2), requires_grad=True)
    model.features(x)[:, :, step].sum().backward()
    return (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero().flatten()


def test_receptive_field_by_perturbation() -> None:
    model = M5().eval()
    # Input exactly one receptive field long: every sample influences the single output step.
    touched = _influence(model, model.receptive_field, 0)
    assert len(touched) == model.receptive_field
    # Longer input: step 2 sees exactly [2 * hop, 2 * hop + receptive field).
    touched = _influence(model, model.receptive_field + 4 * model.hop, 2)
    start = 2 * model.hop
    assert touched.min().item() == start
    assert touched.max().item() == start + model.receptive_field - 1
    assert len(touched) == model.receptive_field


def test_layer_table_matches_the_network() -> None:
    model = M5()
    table = compute_layer_table(model, length=32000, sr=8000)
    assert table["params"].sum() == count_parameters(model)
    conv_rows = table[table["type"] == "Conv1d"]
    assert [s[0] for s in conv_rows["output_shape"]] == [128, 128, 256, 512]
    last_pool = table[table["type"] == "MaxPool1d"].iloc[-1]
    assert last_pool["output_shape"] == (512, 30)
    assert last_pool["receptive_field"] == model.receptive_field
    assert last_pool["receptive_field_ms"] == pytest.approx(221.5)
    assert table.iloc[0]["receptive_field"] == 80 and table.iloc[0]["receptive_field_ms"] == pytest.approx(10.0)
    assert table.iloc[-1]["output_shape"] == (10,)
    other = compute_layer_table(model, length=16000)
    assert other[other["type"] == "MaxPool1d"].iloc[-1]["output_shape"] == (512, 14)
    with pytest.raises(ValueError, match="receptive field"):
        compute_layer_table(model, length=1000)


def test_normalize_makes_loudness_irrelevant() -> None:
    torch.manual_seed(4)
    plain, norm = M5().eval(), M5(M5Config(normalize=True)).eval()
    norm.load_state_dict(plain.state_dict())
    assert count_parameters(norm) == 559_114
    x = torch.randn(2, 1, 32000) * 0.05
    with torch.no_grad():
        torch.testing.assert_close(norm(x), norm(8 * x), rtol=1e-4, atol=1e-4)
        assert (plain(x) - plain(8 * x)).abs().max() > 1e-2  # the paper's M5 does hear loudness
        assert torch.isfinite(norm(torch.zeros(1, 1, 32000))).all()  # silence is not amplified to NaN
