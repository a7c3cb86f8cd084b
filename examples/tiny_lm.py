"""A tiny character-level transformer language model on generated text, with thrifty.train.

Run:  torchrun --standalone --nproc_per_node 2 examples/tiny_lm.py --ckpt /tmp/tiny-lm
On a GPU the same command uses NCCL and CUDA; `--steps-report` prints step time and goodput.

Diff from plain PyTorch (DistributedDataParallel + DistributedSampler):

    -dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    +job = thrifty.train.init(args.ckpt)
    -model = DistributedDataParallel(model.to(device))
    +model = job.parallel(model.to(job.device), optimizer)   # AdamW: preconditioned scaling
    -loader = DataLoader(data, batch_size=32, sampler=DistributedSampler(data))
    +loader = job.loader(data, batch_size=32, max_batch_size=512)
    -for epoch in range(args.epochs):
    +for epoch in job.epochs(args.epochs):
    -dist.destroy_process_group()
    +job.finish()
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F
from stopping import add_stop_file, told_to_stop
from torch import nn
from torch.utils.data import TensorDataset

import thrifty.train

_SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher"]
_VERBS = ["sees", "likes", "follows", "finds", "paints", "hears"]
_OBJECTS = ["the river", "a red ball", "the moon", "an apple", "the garden", "a song"]
_ENDS = [".", " today.", " again.", " at night.", " in the rain."]


def corpus(sentences: int, seed: int = 0) -> str:
    """Text from a small random grammar: learnable structure, nothing to download."""
    rng = random.Random(seed)
    return " ".join(
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_ENDS)}"
        for _ in range(sentences)
    )


def windows(text: str, length: int) -> tuple[TensorDataset, int]:
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    count = (len(ids) - 1) // length
    x = ids[: count * length].reshape(count, length)
    y = ids[1 : count * length + 1].reshape(count, length)
    return TensorDataset(x, y), len(vocab)


class TinyLM(nn.Module):
    def __init__(self, vocab: int, length: int, width: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.position[: x.shape[1]]
        return self.head(self.blocks(h, mask=self.mask[: x.shape[1], : x.shape[1]], is_causal=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--ckpt", default=None, help="checkpoint folder")
    parser.add_argument("--report", default=None, help="report file or http URL")
    add_stop_file(parser)
    args = parser.parse_args()

    job = thrifty.train.init(args.ckpt, args.report)
    data, vocab = windows(corpus(args.sentences), args.length)
    model = TinyLM(vocab, args.length).to(job.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model = job.parallel(model, optimizer)  # "auto" picks AdamScale for AdamW
    loader = job.loader(data, batch_size=32, max_batch_size=512)
    start, steps = time.perf_counter(), job.step
    loss = torch.zeros(())
    for epoch in job.epochs(args.epochs):
        if told_to_stop(job, args.stop_file):
            break
        for x, y in loader:
            x, y = x.to(job.device), y.to(job.device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()
            optimizer.step()
        if job.env.rank == 0:
            print(f"epoch {epoch}: loss {loss.item():.3f}, batch {loader.batch_size}", flush=True)
    if job.env.rank == 0:
        seconds = (time.perf_counter() - start) / max(job.step - steps, 1)
        goodput = job.goodput_model()
        if goodput is not None:
            value = float(goodput.goodput(job.kind, job.env.num_nodes, job.env.world_size,
                                          loader.atomic_bsz, loader.accum_steps))
            print(f"device {job.device}: {seconds * 1e3:.1f} ms per step, "
                  f"predicted goodput {value:.0f} samples/s at batch {loader.batch_size}")
    job.finish()


if __name__ == "__main__":
    main()
