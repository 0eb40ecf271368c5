"""What natgrad optimizes: every kind of tensor that a step could not update, or would update uselessly, is named in
one line with its position, its name and the remedy."""

import pytest
import torch
from torch import nn

from natgrad.parameters import check_gradients, check_parameters, describe_parameter


def test_trainable_leaves_pass_and_are_returned_as_a_list():
    net = nn.Linear(3, 2)
    params = check_parameters(p for p in net.parameters())
    assert params == list(net.parameters())


@pytest.mark.parametrize(
    ("make", "error", "says"),
    [
        (lambda: [torch.zeros(2, dtype=torch.long, requires_grad=False)], TypeError, "has dtype torch.int64"),
        (lambda: [3.0], TypeError, "is not a tensor"),
        (lambda: [nn.Parameter(torch.zeros(2), requires_grad=False)], ValueError, "does not require grad"),
        (lambda: [nn.Parameter(torch.zeros(2)) * 2], ValueError, "is not a leaf tensor"),
        (lambda: [nn.Parameter(torch.empty(2, device="meta"))], ValueError, "meta device"),
        (lambda: [], ValueError, "list of parameters is empty"),
    ],
    ids=["integer", "number", "frozen", "not_leaf", "meta", "empty"],
)
def test_each_problem_is_one_line_naming_the_parameter(make, error, says):
    with pytest.raises(error, match=says) as info:
        check_parameters(make(), names=["w"])
    assert "\n" not in str(info.value)
    if "empty" not in says:
        assert str(info.value).startswith("parameter 0 ('w', ")


def test_a_single_tensor_or_a_repeated_one_is_refused():
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match=r"single tensor; pass \[tensor\]"):
        check_parameters(w)
    with pytest.raises(ValueError, match=r"listed twice .also at position 0."):
        check_parameters([w, w])
    assert describe_parameter(1, w) == "parameter 1 (shape (2,))"


def test_sparse_gradients_are_refused_with_the_remedy():
    emb = nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse=False"):
        check_gradients([None, emb.weight.grad], positions=[0, 4])
    check_gradients([torch.zeros(2), None])
