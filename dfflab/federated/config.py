"""Settings of the federated stage (section ``[fl]``), also Flower's run config keys."""

from dataclasses import dataclass, field


@dataclass
class FLConfig:
    rounds: int = field(default=10, metadata={"help": "Federated rounds."})
    local_epochs: int = field(default=1, metadata={"help": "Client epochs per round."})
    strategy: str = field(default="fedavg", metadata={"help": "fedavg, fedprox, fedadam, fedbn, fedmedian, fedtrimmedavg, krum."})
    partitioning: str = field(default="source", metadata={"help": "source, iid or dirichlet."})
    num_partitions: int = field(default=3, metadata={"help": "Number of clients (N)."})
