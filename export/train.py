"""Deterministic CPU training and evaluation of the members, and the fit of the stacking combiner."""

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def fit(
    model: nn.Module,
    ids: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    seed: int,
    lr: float = 2e-3,
    batch_size: int = 64,
) -> nn.Module:
    # Both members ignore padding exactly, so training on the columns that hold real tokens changes nothing but time.
    longest = int(mask.sum(1).max())
    ids, mask = ids[:, :longest], mask[:, :longest]
    generator = torch.Generator().manual_seed(seed)
    ids_t, mask_t, labels_t = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(ids_t), generator=generator).split(batch_size):
            probs = model(ids_t[batch], mask_t[batch])
            loss = nn.functional.nll_loss(torch.log(probs.clamp_min(1e-9)), labels_t[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.inference_mode()
def predict(model: nn.Module, ids: np.ndarray, mask: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    longest = max(int(mask.sum(1).max()), 1)  # as in fit(): padding changes nothing but time (4x, minilm at 128)
    ids, mask = np.ascontiguousarray(ids[:, :longest]), np.ascontiguousarray(mask[:, :longest])
    parts = [
        model(torch.from_numpy(ids[i : i + batch_size]), torch.from_numpy(mask[i : i + batch_size]))
        for i in range(0, len(ids), batch_size)
    ]
    return torch.cat(parts).numpy()


def fit_stacking(stacked: np.ndarray, labels: np.ndarray, l2: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on log member probabilities ([batch, members, classes]) -> (coef, bias).

    Fitted on a validation split the members never trained on, so it learns how far to trust each member.
    """
    features = torch.from_numpy(np.log(np.clip(stacked, 1e-7, 1.0)).reshape(len(stacked), -1))
    target = torch.from_numpy(labels)
    classes = stacked.shape[2]
    coef = torch.zeros(features.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([coef, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(features @ coef + bias, target) + l2 * coef.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return coef.detach().numpy(), bias.detach().numpy()


def fit_logistic(
    features: torch.Tensor, target: torch.Tensor, classes: int, max_iter: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (weight [classes, width], bias [classes]) with scikit-learn's default strength
    (C=1), by L-BFGS: the pretrained encoder's head, and each tenant's head (release/heads.py)."""
    weight = torch.zeros(classes, features.shape[1], requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter)

    def closure():
        optimizer.zero_grad()
        # C=1 in scikit-learn's sum-of-losses form is 0.5 |w|^2 / n in this mean-loss form.
        loss = nn.functional.cross_entropy(features @ weight.T + bias, target)
        loss = loss + 0.5 * weight.square().sum() / len(features)
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()
