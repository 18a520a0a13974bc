"""The formulas of the public test-time code, re-typed as independent oracles (issue 22).

azshue/TPT ``tpt_classification.py``: ``select_confident_samples``, ``avg_entropy``; hee-suk-yoon/C-TPT
``clip/custom_clip.py``: the ``l2_norm_mean`` dispersion; ashshaksharifdeen/O-TPT ``otpt_classification.py``: the
Householder block, with its (C, C, C) reflection matrices built explicitly as the code builds them.
"""

from __future__ import annotations

import numpy as np
import torch


def tpt_select_confident_samples(logits, top):
    batch_entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    idx = torch.argsort(batch_entropy, descending=False)[: int(batch_entropy.size()[0] * top)]
    return logits[idx], idx


def tpt_avg_entropy(outputs):
    logits = outputs - outputs.logsumexp(dim=-1, keepdim=True)
    avg_logits = logits.logsumexp(dim=0) - np.log(logits.shape[0])
    min_real = torch.finfo(avg_logits.dtype).min
    avg_logits = torch.clamp(avg_logits, min=min_real)
    return -(avg_logits * torch.exp(avg_logits)).sum(dim=-1)


def ctpt_l2_norm_mean(text_features):
    prompt_mean = text_features.mean(0)
    feature_distance = text_features - prompt_mean
    l2_norm = torch.linalg.norm(feature_distance, dim=-1)
    return l2_norm.mean()


def otpt_householder(text_feature):
    Wwt = torch.matmul(text_feature, text_feature.T)
    e = torch.eye(Wwt.shape[1], dtype=Wwt.dtype)
    M_norm = torch.linalg.norm(Wwt, dim=0, keepdim=True)
    u = Wwt - e * M_norm
    u_norm = torch.linalg.norm(u, dim=-1, keepdim=True)
    v = u / u_norm
    outer_products = v.unsqueeze(2) @ v.unsqueeze(1)  # (C, C, C)
    transformed_matrix = e.unsqueeze(0).expand(Wwt.shape[1], -1, -1) - 2 * outer_products
    Hx = torch.bmm(transformed_matrix, Wwt.unsqueeze(2)).squeeze(2)
    return torch.linalg.norm(Hx - e, dim=-1).mean()
