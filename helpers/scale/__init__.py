"""Notebook 12, where the memory goes at scale: the anatomy of training memory (`anatomy`),
activation recomputation on a small Transformer (`recompute`), ZeRO-1/2 written on the process
group and held against DDP, PyTorch's ZeroRedundancyOptimizer and FSDP2 (`zero`), data
parallelism built from gradient hooks, bucketed and asynchronous (`ddp_hooks`), and the α–β
all-reduce cost model (`comm_model`); `jobs.several` runs several workers in one launch."""
