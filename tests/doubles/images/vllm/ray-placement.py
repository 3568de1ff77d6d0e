"""The vLLM image double's stand-in for vLLM's Ray executor (see ./vllm): what vLLM does first with
`--distributed-executor-backend ray`, on the Ray cluster the job formed: reserve one GPU per worker
(tensor x pipeline parallel) in a placement group, then start a task in each bundle, here reporting the
Ray node it landed on. Prints the placement; fails as vLLM does when the cluster cannot hold the workers.

    python3 ray-placement.py TENSOR_PARALLEL PIPELINE_PARALLEL
"""

import collections
import sys

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

tp, pp = int(sys.argv[1]), int(sys.argv[2])
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
workers = tp * pp
group = placement_group([{"GPU": 1}] * workers, strategy="PACK")
try:
    ray.get(group.ready(), timeout=60)
except ray.exceptions.GetTimeoutError:
    sys.exit(f"vllm image double: the Ray cluster cannot place {workers} GPU workers: {ray.cluster_resources()}")


@ray.remote(num_gpus=1, num_cpus=0)
def node_of_worker() -> str:
    return ray.get_runtime_context().get_node_id()


names = {n["NodeID"]: n["NodeName"] for n in ray.nodes()}
in_bundle = [PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i) for i in range(workers)]
ids = ray.get([node_of_worker.options(scheduling_strategy=s).remote() for s in in_bundle])
per_node = collections.Counter(names[i] for i in ids)
print(f"vllm image double: Ray placed {workers} GPU workers: "
      + ", ".join(f"{n} {c}" for n, c in sorted(per_node.items())), file=sys.stderr, flush=True)  # fmt: skip
ray.util.remove_placement_group(group)
