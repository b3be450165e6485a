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
TASKS = ("detector", "ssl")
SSL_UPDATES = ("fedema", "fedbyol")
DP_CLIPPINGS = ("client", "server")
DP_STRATEGIES = ("fedavg", "fedprox")  # Flower's accountant needs FedAvg's uniform mean (see privacy.py)


@dataclass
class FLConfig:
    task: str = _f("detector", "What the federation trains: detector (the real/fake detector) or ssl (self-supervised "
                   "pretraining of the backbone with ssl.method on each client's unlabeled images; "
                   "dfflab/federated/ssl_task.py).")
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
    server_momentum: float = _f(0.9, "FedAvgM: server momentum beta on the averaged update (Hsu et al. 2019).")
    server_step: float = _f(1.0, "FedAvgM: server learning rate on the averaged update (1 = FedAvg's step; above 1 "
                            "makes up for averaging N clients' Adam steps, which shrinks their noisy parts).")
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
    ssl_update: str = _f("fedema", "Federated BYOL: how a client starts a round (SimCLR always takes the global "
                         "online network). fedema (Zhuang et al. 2022): online network and predictor = an EMA of "
                         "its own and the global one, weighted by their divergence; fedbyol: take the global ones. "
                         "The target network stays on the client in both.")
    ema_tau: float = _f(0.7, "FedEMA autoscaler target tau: lambda = tau / divergence at a client's first update, "
                        "so it keeps tau of its own weights then (the paper's 0.7).")
    dp_clip: float = _f(0.0, "DP-FedAvg (McMahan et al. 2018): L2 bound C on each client's model update per round "
                        "(0 = no differential privacy). Client-level DP: it bounds what one client's whole data "
                        "set can change.")
    dp_noise: float = _f(1.0, "DP-FedAvg noise multiplier z: Gaussian noise of std z*C/N is added to the mean of "
                         "the N clipped updates (0 = clipping only, no privacy guarantee: epsilon inf).")
    dp_delta: float = _f(1e-5, "delta at which epsilon is reported after every round (RDP accountant of "
                         "dp-accounting, all N clients every round: no sampling amplification).")
    dp_clipping: str = _f("client", "Where updates are clipped: client (each client clips its own before sending: "
                          "Flower's fixedclipping_mod) or server (the server clips what it receives).")


def dp_enabled(fl: FLConfig) -> bool:
    """Whether the run is DP-FedAvg (``fl.dp-clip`` > 0)."""
    return fl.dp_clip > 0


def run_stage(fl: FLConfig) -> str:
    """The run folder's stage: ``federated`` (detector) or ``federated-ssl``."""
    return "federated-ssl" if fl.task == "ssl" else "federated"


def default_name(cfg) -> str:
    """A federated run's default name: ``<strategy>-<partitioning>``, ``ssl-<method>-<partitioning>``."""
    if cfg.fl.task == "ssl":
        return f"ssl-{cfg.ssl.method}-{cfg.fl.partitioning}"
    return f"{cfg.fl.strategy}-{cfg.fl.partitioning}"


def check_names(fl: FLConfig) -> None:
    """Raise ConfigError naming the ``fl.*`` setting whose value is unknown or out of range."""
    for key, value, known in (("strategy", fl.strategy, STRATEGIES), ("partitioning", fl.partitioning, PARTITIONINGS),
                              ("attack", fl.attack, ATTACKS), ("fail-mode", fl.fail_mode, FAIL_MODES),
                              ("task", fl.task, TASKS), ("ssl-update", fl.ssl_update, SSL_UPDATES),
                              ("dp-clipping", fl.dp_clipping, DP_CLIPPINGS)):
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
    _check_dp(fl)


def _check_dp(fl: FLConfig) -> None:
    if fl.dp_clip < 0 or fl.dp_noise < 0:
        raise ConfigError(f"fl.dp-clip={fl.dp_clip} and fl.dp-noise={fl.dp_noise} must be >= 0")
    if not 0.0 < fl.dp_delta < 1.0:
        raise ConfigError(f"fl.dp-delta={fl.dp_delta}: must be in (0, 1)")
    if dp_enabled(fl) and fl.strategy not in DP_STRATEGIES:
        raise ConfigError(f"fl.dp-clip > 0 needs fl.strategy in {', '.join(DP_STRATEGIES)} (an unweighted mean "
                          f"of clipped updates, what the noise is calibrated to), not {fl.strategy}")
    if dp_enabled(fl) and fl.task != "detector":
        raise ConfigError("fl.dp-clip > 0 is DP-FedAvg for fine-tuning the detector (fl.task=detector); "
                          f"not implemented for fl.task={fl.task}")
    if dp_enabled(fl) and fl.min_nodes not in (0, fl.num_partitions):
        raise ConfigError(f"fl.dp-clip > 0 needs every client every round (fl.min-nodes 0 or N), not "
                          f"fl.min-nodes={fl.min_nodes}: the noise and the accountant assume N updates")
