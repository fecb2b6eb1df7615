"""Choosing each batch row's next token: logits processing and sampling for every request in a decode step at once.

Each row keeps its own request's settings (TensorRT-LLM's rules: greedy when top_k is 1, or top_k 0 with top_p 0;
temperature, top-k, top-p, min length, penalties, bias, bad words), vectorized across the rows that use them. A
sampled row draws its random number from its own request's generator, so a seeded request gives the same text
whatever else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence as Rows
from typing import Protocol

import torch


class Row(Protocol):
    """What the sampler reads of a sequence (hf_engine.Sequence)."""

    prompt_ids: list[int]
    output_ids: list[int]
    params: object  # hf_engine.SamplingParams
    generator: torch.Generator | None
    bias: torch.Tensor | None


def choose(rows: Rows[Row], logits: torch.Tensor) -> tuple[list[int], list[float]]:
    """Each row's next token and its log probability (0.0 unless the row asked for log probs).

    `logits` [rows, vocab] float32 is changed in place (penalties and masks applied)."""
    _per_request_processing(rows, logits)
    device = logits.device
    greedy = [row.params.greedy for row in rows]
    tokens = torch.argmax(logits, dim=-1)
    log_probs = None
    sampled = [i for i, is_greedy in enumerate(greedy) if not is_greedy]
    if sampled:
        index = torch.tensor(sampled, device=device)
        chosen, probs = _sample([rows[i] for i in sampled], logits[index])
        tokens[index] = chosen
        if any(rows[i].params.return_log_probs for i in sampled):
            picked = probs.gather(1, chosen[:, None])[:, 0]
            log_probs = {i: p for i, p in zip(sampled, torch.log(picked).tolist(), strict=True)}
    token_list = tokens.tolist()
    values = [0.0] * len(rows)
    wanted = [i for i, row in enumerate(rows) if row.params.return_log_probs and greedy[i]]
    if wanted:
        index = torch.tensor(wanted, device=device)
        chosen = tokens[index]
        greedy_log_probs = torch.log_softmax(logits[index], dim=-1).gather(1, chosen[:, None])[:, 0].tolist()
        for i, value in zip(wanted, greedy_log_probs, strict=True):
            values[i] = value
    for i, value in (log_probs or {}).items():
        values[i] = value
    return token_list, values


def _per_request_processing(rows: Rows[Row], logits: torch.Tensor) -> None:
    """Bias, penalties, min length and bad words: each only for the rows whose requests set them."""
    suppress_end: list[tuple[int, int]] = []
    for i, row in enumerate(rows):
        params, generated = row.params, row.output_ids
        if row.bias is not None:  # first: the bias shifts the model's logits, the penalties act on the result
            logits[i, : row.bias.numel()] += row.bias
        if params.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(row.prompt_ids) | set(generated)), device=logits.device)
            values = logits[i, seen]
            logits[i, seen] = torch.where(
                values > 0, values / params.repetition_penalty, values * params.repetition_penalty
            )
        if generated and (params.presence_penalty or params.frequency_penalty):
            ids, counts = torch.tensor(generated, device=logits.device).unique(return_counts=True)
            logits[i, ids] -= params.presence_penalty + params.frequency_penalty * counts.to(logits.dtype)
        if params.end_id is not None and 0 <= params.end_id < logits.shape[1] and len(generated) < params.min_length:
            suppress_end.append((i, params.end_id))
        if params.bad_words:
            history = row.prompt_ids + generated
            for word in params.bad_words:
                if word and (len(word) == 1 or history[-(len(word) - 1) :] == word[:-1]):
                    logits[i, word[-1]] = float("-inf")
    if suppress_end:
        rows_index, end_ids = zip(*suppress_end, strict=True)
        logits[list(rows_index), list(end_ids)] = float("-inf")


def _sample(rows: Rows[Row], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(token per row, the probabilities it was drawn from [rows, vocab]) for rows that sample."""
    device = logits.device
    temperature = torch.tensor([max(row.params.temperature, 1e-5) for row in rows], device=device)
    logits = logits / temperature[:, None]
    ordered, order = torch.sort(logits, dim=-1, descending=True)
    top_k = torch.tensor([row.params.top_k if row.params.top_k > 0 else 0 for row in rows], device=device)
    if bool((top_k > 0).any()):
        kth = ordered.gather(1, (top_k.clamp(min=1, max=logits.shape[1]) - 1)[:, None])
        limited = (top_k > 0)[:, None]
        ordered = ordered.masked_fill(limited & (ordered < kth), float("-inf"))
    probs = torch.softmax(ordered, dim=-1)
    top_p = torch.tensor([row.params.top_p for row in rows], device=device)
    nucleus = (top_p > 0) & (top_p < 1)
    if bool(nucleus.any()):
        # keep the tokens before the cumulative probability passes top_p, and the one that crosses it
        drop = (probs.cumsum(-1) - probs) > top_p[:, None]
        probs = probs.masked_fill(nucleus[:, None] & drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    draws = torch.stack([torch.rand((), generator=row.generator, device=device) for row in rows])
    cumulative = probs.cumsum(-1)
    position = torch.searchsorted(cumulative, (draws * cumulative[:, -1])[:, None]).clamp(max=logits.shape[1] - 1)
    tokens = order.gather(1, position)[:, 0]
    unsorted = torch.zeros_like(probs).scatter_(1, order, probs)
    return tokens, unsorted
