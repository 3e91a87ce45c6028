"""Engine utilities: files and JSON, logging, seeding, meters, registries, checkpoints."""
from dassl.utils.tools import (  # noqa: F401
    UnknownChoiceError,
    UserError,
    check_availability,
    check_isfile,
    collect_env_info,
    get_most_similar_str_to_a_from_b,
    listdir_nohidden,
    mkdir_if_missing,
    read_image,
    read_json,
    set_random_seed,
    tolist_if_not,
    write_json,
)
from dassl.utils.logger import Logger, close_logger, setup_logger  # noqa: F401
from dassl.utils.meters import AverageMeter, MetricMeter  # noqa: F401
from dassl.utils.registry import Registry, RegistryError  # noqa: F401
from dassl.utils.torchtools import (  # noqa: F401
    CheckpointNotFoundError,
    atomic_torch_save,
    atomic_write_text,
    count_num_param,
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
)
