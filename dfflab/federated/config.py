"""Settings of the federated stage (section ``[fl]``), also Flower's run config keys.

Data, model, optimiser, device and seed come from ``[data]``, ``[model]`` and
``[train]`` (``train.lr``, ``train.batch-size``, ``train.init`` ...), so a federated
run and the centralized baseline differ only in what this section says. The number of
clients N is the federation's size (``--federation-config "num-supernodes=N"``);
``dfflab federated run`` sets it from ``fl.num-partitions``.
"""

from dataclasses import dataclass

from dfflab.settings import ConfigError
from dfflab.settings import doc as _f

# Kept here (no flwr / datasets import) so the launcher can check names cheaply.
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedbn", "fedmedian", "fedtrimmedavg", "krum")
PARTITIONINGS = ("source", "iid", "dirichlet")
ATTACKS = ("label-flip", "scale", "nan", "inf")
FAIL_MODES = ("raise", "hang")


@dataclass
class FLConfig:
    rounds: int = _f(12, "Federated rounds (x local-epochs = the epochs-equivalent of train.epochs).")
    local_epochs: int = _f(1, "Client epochs per round.")
    keep_optimizer: bool = _f(False, "Each client keeps its AdamW state across rounds (in Flower's context.state) "
                              "instead of starting AdamW afresh every round; with it, one IID client trains exactly "
                              "like the centralized baseline.")
    local_batch_size: int = _f(0, "Images per client step (0 = train.batch-size). With N IID clients, "
                               "train.batch-size / N gives each client the optimizer steps per epoch of the "
                               "centralized run.")
    strategy: str = _f("fedavg", "fedavg, fedavgm, fedprox, fedadam, fedbn, fedmedian, fedtrimmedavg or krum "
                       "(dfflab/federated/strategies.py).")
    partitioning: str = _f("source", "source (each client: one generator's fakes + a share of the reals, "
                           "each real with its own fake), iid, or dirichlet (over sources, fl.alpha).")
    num_partitions: int = _f(3, "Number of clients N (a multiple of the fake sources for `source`).")
    alpha: float = _f(0.5, "Dirichlet concentration over sources (small = skewed clients).")
    min_partition_size: int = _f(10, "Dirichlet: resample until every client holds at least this many images.")
    partition_seed: int = _f(0, "Seed of the partitioning (iid shuffle, Dirichlet draw, source shares).")
    proximal_mu: float = _f(0.01, "FedProx: weight mu of the proximal term mu/2 ||w - w_global||^2.")
    server_lr: float = _f(0.01, "FedAdam: server learning rate eta (Reddi et al. 2021 tune it in 1e-3..1).")
    server_momentum: float = _f(0.9, "FedAvgM: server momentum beta on the averaged update (Hsu et al. 2019; "
                                "server learning rate 1).")
    trim_beta: float = _f(0.2, "FedTrimmedAvg: share cut off each tail, in [0, 0.5).")
    krum_malicious: int = _f(0, "Krum: number of malicious clients f it tolerates.")
    client_cpus: int = _f(1, "CPU cores per simulated client (Ray num-cpus and the client's torch threads).",
                          result=False)
    client_gpus: float = _f(0.0, "GPU share per simulated client (Ray num-gpus; 0 = clients on CPU).", result=False)
    parallel_clients: int = _f(0, "Clients training at once in a simulation (Ray's CPU count = this x "
                               "client-cpus); 0 = all N.", result=False)
    fraction_evaluate: float = _f(1.0, "Share of clients that validate the global model each round "
                                  "(0 = no client-side evaluation, only the server's).")
    min_nodes: int = _f(0, "Fewest clients a round needs to start and to aggregate (0 = all N). Below N, "
                        "a round goes on without crashed, failing or late clients.")
    wait_nodes: float = _f(0.0, "Seconds each round waits for all N clients to be connected (a restarted "
                           "node rejoining) before it starts with the fl.min-nodes there are.")
    round_timeout: float = _f(0.0, "Seconds the server waits for a round's replies; late ones are left "
                              "out (0 = 6 hours).")
    fail_client: int = _f(-1, "Failure injection (tests): this partition id fails in training (-1 = none).")
    fail_round: int = _f(0, "Failure injection: the round it fails in (0 = every round).")
    fail_mode: str = _f("raise", "Failure injection: raise (an exception) or hang (sleep fl.hang-seconds "
                        "before training: a client that times out).")
    hang_seconds: float = _f(600.0, "Failure injection: how long a hanging client sleeps.")
    malicious: list = _f([], "Partition ids of malicious clients, e.g. \"0,2\" (dfflab/federated/attacks.py).")
    attack: str = _f("label-flip", "What malicious clients do: label-flip (train on flipped labels), scale "
                     "(send global + attack-scale x their update), nan or inf (non-finite weights).")
    attack_scale: float = _f(-10.0, "Scale attack: factor on the malicious update (negative = against "
                             "the descent direction).")


def check_names(fl: FLConfig) -> None:
    """Raise ConfigError naming ``fl.strategy`` / ``fl.partitioning`` when unknown."""
    for key, value, known in (("strategy", fl.strategy, STRATEGIES), ("partitioning", fl.partitioning, PARTITIONINGS),
                              ("attack", fl.attack, ATTACKS), ("fail-mode", fl.fail_mode, FAIL_MODES)):
        if value not in known:
            raise ConfigError(f"fl.{key}: unknown '{value}' (known: {', '.join(known)})")
    if fl.num_partitions < 1:
        raise ConfigError(f"fl.num-partitions must be at least 1, got {fl.num_partitions}")
    bad = [p for p in fl.malicious if not str(p).isdigit() or int(p) >= fl.num_partitions]
    if bad:
        raise ConfigError(f"fl.malicious: {bad} are not partition ids 0..{fl.num_partitions - 1}")
    if not 0 <= fl.min_nodes <= fl.num_partitions:
        raise ConfigError(f"fl.min-nodes={fl.min_nodes}: must be in 0..fl.num-partitions ({fl.num_partitions})")
    if not 0.0 <= fl.fraction_evaluate <= 1.0:
        raise ConfigError(f"fl.fraction-evaluate={fl.fraction_evaluate}: must be in [0, 1]")
