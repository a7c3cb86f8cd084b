"""Adaptive, elastic PyTorch training that measures itself and reports its goodput.

A few lines turn a data-parallel PyTorch script into a job the scheduler can resize:

    job = thrifty.train.init()                        # allocation, process group, checkpoint
    model = job.parallel(model, optimizer)            # DDP + timing + noise + LR scaling
    loader = job.loader(train_set, batch_size=64, max_batch_size=1024)
    for epoch in job.epochs(10):                      # resumes mid-epoch after a restart
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
    job.finish()
"""

from thrifty.train.checkpoint import CheckpointStore
from thrifty.train.data import AdaptiveDataLoader, ElasticSampler
from thrifty.train.env import TrainEnv
from thrifty.train.job import Job, init
from thrifty.train.parallel import AdaptiveDataParallel
from thrifty.train.report import Reporter
from thrifty.train.scaling import AdamScale, AdaScale, LinearScale, ScalingRule, SqrtScale
from thrifty.train.signals import EXIT_RESIZE

__all__ = [
    "EXIT_RESIZE",
    "AdaScale",
    "AdamScale",
    "AdaptiveDataLoader",
    "AdaptiveDataParallel",
    "CheckpointStore",
    "ElasticSampler",
    "Job",
    "LinearScale",
    "Reporter",
    "ScalingRule",
    "SqrtScale",
    "TrainEnv",
    "init",
]
