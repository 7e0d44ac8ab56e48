"""A stage added to the flow the way the architecture says a new stage is added: this module, and its line in
`mining.stages.FLOW` (the test puts it there). It marks every caption with what it saw, so a test can read from the
output that it ran, in batches of its declared size, with its declared CPUs."""
from mining.stages.base import Stage


class StampStage(Stage):
    name = "stamp"
    reads = ("captions", "pairs")
    fills = ("captions",)

    def process(self, samples):
        cpus = "local"
        try:
            import ray

            if ray.is_initialized():
                cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except ImportError:
            pass
        for s in samples:
            s.captions = [f"{c} [stamp batch={len(samples)} cpu={cpus}]" for c in s.captions]
