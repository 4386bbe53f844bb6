"""Chunked LM head (``model.logits_chunk``): the same log-probs, entropies and gradients as the unchunked
forward, in fp32 and with bf16 parameters, at chunk sizes that divide the token count and that do not."""

from __future__ import annotations

import pytest
import torch
import transformers

from entropic_tune.model.policy import logprobs_and_entropy

N, P, R, VOCAB = 3, 5, 11, 301  # 33 response tokens


def _model(dtype: torch.dtype = torch.float32, tie: bool = True) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=tie)
    return transformers.Qwen2ForCausalLM(cfg).to(dtype)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (N, P + R), generator=g)
    attn = torch.ones_like(ids)
    attn[0, :2] = 0  # a left-padded prompt
    attn[1, P + 7 :] = 0  # a response that ended early
    return ids, attn


def _run(model: transformers.PreTrainedModel, chunk: int, temperature: float = 0.7) -> tuple:
    """(logp, entropy, gradients of a loss that uses both) for one chunk size; the head's inputs seen."""
    ids, attn = _batch()
    seen: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].shape[:-1].numel()))
    model.zero_grad(set_to_none=True)
    logp, ent = logprobs_and_entropy(model, ids, attn, P, temperature, "cpu", False, chunk)
    w = torch.linspace(-1.0, 1.0, logp.numel()).view_as(logp)
    ((w * logp).sum() + (w.flip(0) * ent).sum()).backward()
    hook.remove()
    grads = {name: p.grad.float().clone() for name, p in model.named_parameters()}
    return logp.detach(), ent.detach(), grads, seen


@pytest.mark.parametrize("chunk", [1, 7, 11, 32])
@pytest.mark.parametrize("tie", [True, False])
def test_chunked_equals_unchunked_in_fp32(chunk: int, tie: bool) -> None:
    model = _model(tie=tie)
    logp0, ent0, grads0, seen0 = _run(model, 0)
    logp, ent, grads, seen = _run(model, chunk)
    assert seen0 == [N * (P + R)]  # unchunked: the model's own forward, the head over every position
    assert max(seen) <= chunk and sum(seen) >= N * R  # chunked: never more than `chunk` tokens at once
    assert logp.dtype == ent.dtype == torch.float32 and logp.shape == ent.shape == (N, R)
    torch.testing.assert_close(logp, logp0, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-5)
    assert grads.keys() == grads0.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, grads0[name], rtol=1e-4, atol=1e-6, msg=name)
    assert grads0["model.embed_tokens.weight"].abs().sum() > 0  # the loss reaches the weights at all


@pytest.mark.parametrize("chunk", [5, 16])
def test_chunked_equals_unchunked_with_bf16_parameters(chunk: int) -> None:
    model = _model(torch.bfloat16)
    logp0, ent0, grads0, _ = _run(model, 0)
    logp, ent, grads, _ = _run(model, chunk)
    assert logp.dtype == ent.dtype == torch.float32  # the statistics in fp32 even from bf16 logits
    torch.testing.assert_close(logp, logp0, rtol=0, atol=1e-4)
    torch.testing.assert_close(ent, ent0, rtol=0, atol=1e-4)
    for name, g in grads.items():  # bf16 gradients summed in another order: bf16 rounding
        scale = grads0[name].abs().max().clamp_min(1e-6)
        assert ((g - grads0[name]).abs().max() / scale) < 2e-2, name


def test_a_batch_within_one_chunk_runs_the_unchunked_code_bit_for_bit() -> None:
    model = _model()
    logp0, ent0, grads0, _ = _run(model, 0)
    logp, ent, grads, seen = _run(model, N * R)  # exactly the batch's tokens: one chunk
    assert seen == [N * (P + R)]
    assert torch.equal(logp, logp0) and torch.equal(ent, ent0)
    assert all(torch.equal(g, grads0[k]) for k, g in grads.items())


def test_bf16_parameters_give_the_fp32_entropy_within_bf16_rounding() -> None:
    """bf16 weights change the logits by bf16 rounding only; the entropy, computed in fp32 from them,
    stays close to the fp32 model's (a bf16 softmax would lose far more on a 301-token vocabulary)."""
    ids, attn = _batch()
    fp32 = _model()
    bf16 = _model(torch.bfloat16)
    with torch.no_grad():
        _, h32 = logprobs_and_entropy(fp32, ids, attn, P, 1.0, "cpu", False, 7)
        _, h16 = logprobs_and_entropy(bf16, ids, attn, P, 1.0, "cpu", False, 7)
    assert h16.dtype == torch.float32
    assert (h16 - h32).abs().max() < 0.02 * h32.abs().max()
    assert h32.min() > 1.0  # a random model: far from a point mass, so the comparison means something
