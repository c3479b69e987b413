"""The bundled language-model workload: a small GPT-like causal transformer over token sequences.

One implementation of the model contract (cl_hpc/learn/contract.py); its data module is
:class:`cl_hpc.learn.tokens.TokenData`. Token and learned position embeddings, pre-norm blocks
(``nn.TransformerEncoder`` with ``norm_first`` and a causal mask), a final LayerNorm and an untied
head. It carries a :class:`~cl_hpc.profile.flops.TransformerSpec`, so the profiler takes its FLOPs
from the analytic 6N + 12LHQT formula (MFU) instead of counting a step.

Its metrics are the ones language-model users read: ``loss`` (mean next-token negative
log-likelihood, nats), ``perplexity`` (exp of that loss) and ``token_accuracy`` (share of next
tokens whose argmax is right). Lower loss and perplexity are better, so the gate compares them so.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cl_hpc.errors import ConfigError
from cl_hpc.learn.base import LoopModule
from cl_hpc.learn.contract import Direction, Spec
from cl_hpc.profile.flops import TransformerSpec

# Logit elements (rows x positions x vocabulary) per forward in evaluate_batch: bounds its memory
# (256 MiB in fp32) whatever chunk of rows the loop hands it.
_LOGITS_PER_CHUNK = 1 << 26


class GPT(LoopModule):
    """A causal transformer language model; ``vocab_size`` and ``seq_len`` come from the data module."""

    metrics: ClassVar[Mapping[str, Direction]] = {
        "loss": Direction.LOWER, "perplexity": Direction.LOWER, "token_accuracy": Direction.HIGHER}
    mask: torch.Tensor  # the causal mask buffer [seq_len, seq_len]

    def __init__(self, vocab_size: int, seq_len: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 lr: float = 3e-4, weight_decay: float = 0.1, dropout: float = 0.0) -> None:
        super().__init__()
        _check_args(vocab_size=vocab_size, seq_len=seq_len, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                    lr=lr, weight_decay=weight_decay, dropout=dropout)
        self.vocab_size, self.seq_len, self.d_model = vocab_size, seq_len, d_model
        self.n_layers, self.n_heads, self.lr, self.weight_decay = n_layers, n_heads, lr, weight_decay
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(seq_len, d_model))
        block = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        # Not persistent: the checkpoint holds weights only, and the mask follows from seq_len.
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)
        # GPT-2's initialization (nanoGPT): small embeddings keep the first steps' logits near uniform.
        for weight in (self.embed.weight, self.pos, self.head.weight):
            nn.init.normal_(weight, std=0.02)

    @property
    def transformer_spec(self) -> TransformerSpec:
        """What the analytic FLOPs formula needs (cl_hpc/profile/flops.py): the MFU numerator."""
        return transformer_spec_of(self)

    # ---- the network ------------------------------------------------------------------------

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final hidden states [rows, positions, d_model] of token ids [rows, positions <= seq_len]."""
        length = tokens.shape[1]
        if length > self.seq_len:
            raise ValueError(f"GPT: {length} tokens per row, more than its seq_len {self.seq_len}")
        mask = self.mask[:length, :length]
        return self.blocks(self.embed(tokens) + self.pos[:length], mask=mask, is_causal=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits [rows, positions, vocab_size]."""
        return self.head(self.hidden(tokens))

    # ---- Lightning ----------------------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        inputs, targets = batch
        loss = F.cross_entropy(self(inputs).flatten(0, 1), targets.flatten())
        return {"loss": loss, "rows": len(inputs)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Weight decay on matrices only (nanoGPT): decaying norms, biases and position rows just hurts.
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.95), fused=self.device.type == "cuda")

    # ---- the contract -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per row: ``loss`` = mean next-token NLL (nats), ``token_accuracy`` = share of next tokens right."""
        step = max(1, _LOGITS_PER_CHUNK // max(1, inputs.shape[1] * self.vocab_size))
        losses, right = [], []
        for start in range(0, len(inputs), step):
            x, y = inputs[start:start + step], targets[start:start + step]
            logits = self(x).float()
            losses.append(F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1))
            right.append((logits.argmax(dim=-1) == y).float().mean(dim=1))
        if not losses:
            return {"loss": inputs.new_zeros(0, dtype=torch.float32),
                    "token_accuracy": inputs.new_zeros(0, dtype=torch.float32)}
        return {"loss": torch.cat(losses), "token_accuracy": torch.cat(right)}

    @torch.no_grad()
    def predict_batch(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The most likely token after each row's last position, and its probability."""
        probs = torch.softmax(self.head(self.hidden(inputs)[:, -1]).float(), dim=-1)
        best, token = probs.max(dim=-1)
        return {"next_token": token, "next_token_prob": best}

    def output_signature(self) -> list[Spec]:
        return [Spec("next_token", "int64"), Spec("next_token_prob", "float32")]

    def summarize(self, per_row: Mapping[str, np.ndarray]) -> dict[str, Optional[float]]:
        """Means over rows (every row has seq_len positions, so the mean of row means is the token
        mean), and perplexity = exp(mean loss)."""
        out = super().summarize(per_row)
        loss = out.get("loss")
        out["perplexity"] = None if loss is None else float(math.exp(min(loss, 700.0)))
        return out


def transformer_spec_of(model: GPT) -> TransformerSpec:
    """The analytic formula's inputs. N leaves out the token and position embeddings (lookups and
    additions, no matmul) but keeps the untied head, which is a matmul."""
    n = sum(p.numel() for p in model.parameters())
    non_embedding = n - model.embed.weight.numel() - model.pos.numel()
    return TransformerSpec(n, model.n_layers, model.n_heads, model.d_model // model.n_heads, model.seq_len,
                           non_embedding)


def _check_args(**args: Any) -> None:
    problems = [f"{name}={args[name]} must be >= 1" for name in ("vocab_size", "seq_len", "d_model", "n_layers",
                                                                  "n_heads") if args[name] < 1]
    if not problems and args["d_model"] % args["n_heads"]:
        problems.append(f"d_model={args['d_model']} must be a multiple of n_heads={args['n_heads']}")
    if not (args["lr"] > 0 and args["weight_decay"] >= 0):
        problems.append(f"lr={args['lr']} must be > 0 and weight_decay={args['weight_decay']} >= 0")
    if not 0.0 <= args["dropout"] < 1.0:
        problems.append(f"dropout={args['dropout']} must be in [0, 1)")
    if problems:
        raise ConfigError("model (GPT): " + "; ".join(problems) + " (conf/model/gpt.yaml)")
