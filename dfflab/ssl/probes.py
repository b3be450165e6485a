"""How good are frozen features? A kNN monitor and a linear probe.

Features come from the shared core's ``predict`` (eval mode, device, autocast), run on
the backbone alone. The kNN classifier is lightly's ``knn_predict`` vote (cosine
similarity, temperature-weighted votes of the k nearest training images) with a
class-prior correction; the linear probe is a logistic regression fitted with L-BFGS on
standardised features. Both are scored for
real/fake (accuracy and balanced accuracy, since DFF is 1 real : 3 fakes) and for the
4-way source (wiki, inpainting, insight, text2img; balanced by construction).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfflab.train.core import predict


def extract_features(backbone: nn.Module, store, rows: np.ndarray, device: torch.device, *,
                     batch_size: int = 256, amp: bool = True, desc: str | None = None):
    """Frozen features of ``rows``: (features (N, D) float CPU, labels (N,), source ids (N,))."""
    pred = predict(backbone, store.batches(rows, batch_size), device, amp=amp, desc=desc)
    return pred.logits.float(), pred.labels, pred.source_ids  # predict's "logits" are features here


def accuracies(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(accuracy, balanced accuracy = mean recall over the classes present)."""
    acc = float((pred == target).float().mean())
    recalls = [float((pred[target == c] == c).float().mean()) for c in target.unique()]
    return acc, float(np.mean(recalls))


@torch.no_grad()
def knn_votes(train_feats: torch.Tensor, train_labels: torch.Tensor, feats: torch.Tensor,
              num_classes: int, k: int = 20, t: float = 0.1, balanced: bool = True,
              chunk: int = 1024, device: torch.device | str = "cpu") -> torch.Tensor:
    """Class scores (N, C) of a weighted kNN vote, summing to 1 per row.

    The vote is lightly's ``knn_predict`` (Wu et al. 2018: cosine similarity, the k most
    similar training images vote with weight exp(sim / t)), which returns only a class
    ranking; here the scores are kept (for AUROC) and, when ``balanced``, each class's
    votes are divided by its share of the bank — with 1 real : 3 fakes an unweighted
    vote calls almost everything fake. Similarities are computed on ``device``.
    """
    bank = F.normalize(train_feats.float().to(device), dim=1)  # (N_bank, D)
    y = train_labels.long().to(device)
    k = min(k, len(bank))
    prior = torch.bincount(y, minlength=num_classes).float() / len(y)
    out = []
    for f in feats.split(chunk):
        sim, idx = (F.normalize(f.float().to(device), dim=1) @ bank.T).topk(k, dim=1)  # (B, k)
        votes = torch.zeros(len(f), num_classes, device=device).scatter_add_(1, y[idx], (sim / t).exp())
        if balanced:
            votes = votes / prior.clamp_min(1e-12)
        out.append((votes / votes.sum(1, keepdim=True)).cpu())
    return torch.cat(out)


def knn_classify(train_feats: torch.Tensor, train_labels: torch.Tensor, feats: torch.Tensor,
                 num_classes: int, k: int = 20, t: float = 0.1, balanced: bool = True) -> torch.Tensor:
    """Top-1 kNN predictions (N,) of ``feats`` from a bank of labelled training features."""
    return knn_votes(train_feats, train_labels, feats, num_classes, k, t, balanced).argmax(1)


def fit_linear(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float = 1e-4,
               balanced: bool = True, max_iter: int = 200):
    """Logistic regression on frozen features; returns ``predict(feats) -> labels``.

    Classes are weighted inversely to their frequency when ``balanced``, so 1 real : 3
    fakes doesn't turn into "always fake". Runs on one CPU thread: its matrices are
    small, and on a busy 2-core machine two threads made it 40x slower (measured).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_linear(feats, labels, num_classes, l2, balanced, max_iter)
    finally:
        torch.set_num_threads(threads)


def _fit_linear(feats, labels, num_classes, l2, balanced, max_iter):
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    x, y = (feats - mean) / std, labels.long()
    counts = torch.bincount(y, minlength=num_classes).float()
    weight = (len(y) / (num_classes * counts.clamp_min(1))) if balanced else None
    head = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y, weight=weight) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda f: head((f - mean) / std).argmax(1).detach()


def label_sets(labels: torch.Tensor, source_ids: torch.Tensor, n_sources: int) -> dict[str, tuple]:
    """The two probe tasks: name -> (targets, number of classes)."""
    return {"real_fake": (labels.long(), 2), "source": (source_ids.long(), n_sources)}


def knn_scores(train, evals, n_sources: int, k: int, t: float,
               device: torch.device | str = "cpu") -> dict[str, float]:
    """kNN accuracies of ``evals`` against the ``train`` bank, each a ``(features, labels, source_ids)``.

    Returns ``knn_real_fake_{acc,bacc,auroc}`` (AUROC of the fake vote share) and
    ``knn_source_acc``.
    """
    from dfflab.metrics import binary_metrics

    out = {}
    tr, ev = label_sets(*train[1:], n_sources), label_sets(*evals[1:], n_sources)
    for task, (y_tr, c) in tr.items():
        votes = knn_votes(train[0], y_tr, evals[0], c, k, t, device=device)
        acc, bacc = accuracies(votes.argmax(1), ev[task][0])
        out[f"knn_{task}_acc"] = acc
        if task == "real_fake":
            out[f"knn_{task}_bacc"] = bacc
            out[f"knn_{task}_auroc"] = binary_metrics(votes[:, 1], ev[task][0])["auroc"]
    return out


def linear_scores(train, evals: dict[str, tuple], n_sources: int, l2: float) -> dict[str, float]:
    """Linear probe fitted on ``train``, scored on each named eval set (``{"val": (...), ...}``)."""
    out = {}
    tr = label_sets(*train[1:], n_sources)
    for task, (y_tr, c) in tr.items():
        clf = fit_linear(train[0], y_tr, c, l2)
        for split, ev in evals.items():
            acc, bacc = accuracies(clf(ev[0]), label_sets(*ev[1:], n_sources)[task][0])
            out[f"linear_{task}_acc_{split}"] = acc
            if task == "real_fake":
                out[f"linear_{task}_bacc_{split}"] = bacc
    return out
