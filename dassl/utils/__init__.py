"""Engine utilities: files and JSON, logging, seeding, meters, registries, checkpoints, run lock,
which process of a multi-process run this is, and the one-line description of a failure."""
from dassl.utils.tools import (  # noqa: F401
    OutputWriteError,
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
    remove_stale_temporary_files,
    set_random_seed,
    tolist_if_not,
    write_json,
)
from dassl.utils.logger import (  # noqa: F401
    Logger,
    close_logger,
    console_stderr,
    log_path,
    quiet_console,
    setup_logger,
    write_to_log,
)
from dassl.utils.distributed import is_main_process, process_rank, world_size  # noqa: F401
from dassl.utils.run_lock import FolderInUseError, RunLock  # noqa: F401
from dassl.utils.failure import expected_failure_line, unexpected_failure_line, worker_traceback  # noqa: F401
from dassl.utils.meters import AverageMeter, MetricMeter  # noqa: F401
from dassl.utils.registry import Registry, RegistryError  # noqa: F401
from dassl.utils.torchtools import (  # noqa: F401
    CheckpointMismatchError,
    CheckpointNotFoundError,
    atomic_torch_save,
    atomic_write_text,
    count_num_param,
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
)
