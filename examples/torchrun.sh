#!/bin/bash
# zoo with torchrun: run this on every node (2 nodes x 4 GPUs here). torchrun starts one process per GPU and
# sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, which Lightning's TorchElasticEnvironment reads.
# runs/ and the data must be on a filesystem every node sees.
#   NODE_RANK=0 MASTER_ADDR=node0 examples/torchrun.sh /shared/data/my_images    # on node0
#   NODE_RANK=1 MASTER_ADDR=node0 examples/torchrun.sh /shared/data/my_images    # on node1
set -euo pipefail
DATA=${1:?usage: examples/torchrun.sh /path/to/image_folder}
NNODES=${NNODES:-2}
GPUS=${GPUS:-4}

torchrun --nnodes "$NNODES" --nproc-per-node "$GPUS" --node-rank "${NODE_RANK:?set NODE_RANK}" \
  --master-addr "${MASTER_ADDR:?set MASTER_ADDR}" --master-port "${MASTER_PORT:-29500}" \
  -m zoo.cli fit --config configs/finetune.yaml --config configs/multi_gpu.yaml \
  --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS" --data.root "$DATA" --runs_dir runs
