# Shared helpers for the protocol scripts (sourced, not run). Run the scripts from the repo root.
# Why a shared file: the scripts must agree on dataset keys, folder checks and output layout, so
# that tools/parse_results.py can group their runs.

PYTHON="${PYTHON:-python}"

die() {
    echo "error: $*" >&2
    exit 2
}

# Echo mode (TRAIN_PY_ECHO non-empty): the scripts print the train.py argument vectors they would run
# instead of running them, so that a caller (tools/synthshapes) gets the exact arguments of the protocol,
# with the same skip-if-done and folder logic, and can run them itself. stdout then holds nothing but
# those vectors: each argument followed by a NUL byte, each vector ended by one more NUL (an empty
# field). Everything else the scripts say goes to stderr in that mode.
echo_mode() {
    [[ -n "${TRAIN_PY_ECHO:-}" ]]
}

# say MESSAGE: progress for the user (stdout; stderr in echo mode, whose stdout is for argv only).
say() {
    if echo_mode; then
        echo "$*" >&2
    else
        echo "$*"
    fi
}

# Fail early with a readable message when not run from the repository root.
require_repo_root() {
    [[ -f train.py && -d configs/datasets ]] \
        || die "run this script from the repository root (the folder with train.py), not from $(pwd)"
}

# dataset_dir KEY -> folder name below the data root (CoOp layout, datasets.md section 2)
dataset_dir() {
    case "$1" in
        imagenet) echo imagenet ;;
        caltech101) echo caltech-101 ;;
        oxford_pets) echo oxford_pets ;;
        stanford_cars) echo stanford_cars ;;
        oxford_flowers) echo oxford_flowers ;;
        food101) echo food-101 ;;
        fgvc_aircraft) echo fgvc_aircraft ;;
        sun397) echo sun397 ;;
        dtd) echo dtd ;;
        eurosat) echo eurosat ;;
        ucf101) echo ucf101 ;;
        imagenetv2) echo imagenetv2 ;;
        imagenet_sketch) echo imagenet-sketch ;;
        imagenet_a) echo imagenet-adversarial ;;
        imagenet_r) echo imagenet-rendition ;;
        *) echo "" ;;
    esac
}

# The dataset keys a user may pass (the YAML stems of configs/datasets/).
known_datasets() {
    local f names=()
    for f in configs/datasets/*.yaml; do
        [[ -e "$f" ]] && names+=("$(basename "$f" .yaml)")
    done
    echo "${names[*]}"
}

# require_dataset_config KEY: the dataset YAML must exist.
require_dataset_config() {
    [[ -f "configs/datasets/$1.yaml" ]] \
        || die "unknown dataset '$1' (no configs/datasets/$1.yaml); known: $(known_datasets)"
}

# dataset_name KEY -> DATASET.NAME read from its YAML (e.g. dtd -> DescribableTextures)
dataset_name() {
    local name
    name="$(sed -n 's/^[[:space:]]*NAME:[[:space:]]*["'\'']\{0,1\}\([A-Za-z0-9_-]*\).*/\1/p' \
        "configs/datasets/$1.yaml" | head -n 1)"
    [[ -n "$name" ]] || die "configs/datasets/$1.yaml has no DATASET.NAME"
    echo "$name"
}

# require_trainer_config TRAINER CFG: the method YAML must exist; list the alternatives if not.
require_trainer_config() {
    local file="configs/trainers/$1/$2.yaml"
    if [[ ! -f "$file" ]]; then
        local have
        have="$(ls "configs/trainers/$1" 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ')"
        die "config file $file not found (set CFG=...; available for $1: ${have:-none})"
    fi
}

# require_data ROOT KEY: the data root and the dataset's folder must exist.
require_data() {
    local root="$1" key="$2" sub
    [[ -n "$root" ]] || die "no data root: set DATA=/path/to/datasets (the folder that holds e.g. oxford_pets/)"
    [[ -d "$root" ]] || die "data root '$root' does not exist: set DATA=/path/to/datasets"
    sub="$(dataset_dir "$key")"
    if [[ -n "$sub" && ! -d "$root/$sub" ]]; then
        die "dataset folder '$root/$sub' for '$key' is missing (download it into $root/$sub, CoOp layout)"
    fi
}

# require_seed SEED: a non-negative integer.
require_seed() {
    [[ "$1" =~ ^[0-9]+$ ]] || die "seed must be a non-negative integer, got '$1'"
}

# kd_weight KEY -> PromptKD's per-dataset KD weight (promptkd.md section 13.3)
kd_weight() {
    case "$1" in
        fgvc_aircraft | oxford_flowers | dtd) echo 200.0 ;;
        *) echo 1000.0 ;;
    esac
}

# shots_value SHOTS -> DATASET.NUM_SHOTS value ("full" / "all" / 0 -> 0 = the whole train split)
shots_value() {
    case "$1" in
        full | all) echo 0 ;;
        *)
            [[ "$1" =~ ^-?[0-9]+$ ]] || die "SHOTS must be an integer or 'full', got '$1'"
            echo "$1"
            ;;
    esac
}

# run_tag: suffix for the config folder so that variants (EXTRA_OPTS) never share an output folder.
# RUN_TAG (even empty) wins; otherwise a readable or hashed form of EXTRA_OPTS.
run_tag() {
    if [[ -n "${RUN_TAG+set}" ]]; then
        [[ -n "$RUN_TAG" ]] && echo "_${RUN_TAG}"
        return 0
    fi
    [[ -n "${EXTRA_OPTS:-}" ]] || return 0
    local tag
    tag="$(echo "$EXTRA_OPTS" | tr -s ' ' '_' | tr -cd 'A-Za-z0-9_.+=-')"
    if (( ${#tag} > 60 )); then
        tag="opts$(echo "$EXTRA_OPTS" | cksum | cut -d ' ' -f 1)"
    fi
    echo "_${tag}"
}

# split_extra_opts: EXTRA_OPTS split on whitespace into the global array EXTRA (values without spaces).
split_extra_opts() {
    EXTRA=()
    if [[ -n "${EXTRA_OPTS:-}" ]]; then
        read -r -a EXTRA <<< "$EXTRA_OPTS"
        (( ${#EXTRA[@]} % 2 == 0 )) || die "EXTRA_OPTS must be KEY VALUE pairs, got: $EXTRA_OPTS"
    fi
}

# skip_if_done DIR: exit 0 with a message when DIR/results.json exists.
skip_if_done() {
    if [[ -f "$1/results.json" ]]; then
        say "Skipping: results already exist at $1/results.json (delete that folder to rerun)"
        exit 0
    fi
}

# init_run DATASET SEED DEFAULT_TRAINER DEFAULT_CFG: check the arguments and set the variables every
# training script shares: DATASET, SEED, DATA, TRAINER, SHOTS, CFG, OUTPUT_ROOT, NUM_SHOTS.
# TRAINER and CFG keep a value already set in the environment.
init_run() {
    DATASET="$1"
    SEED="$2"
    require_seed "$SEED"
    require_dataset_config "$DATASET"
    DATA="${DATA:-./data}"
    TRAINER="${TRAINER:-$3}"
    SHOTS="${SHOTS:-16}"
    CFG="${CFG:-$4}"
    OUTPUT_ROOT="${OUTPUT_ROOT:-output}"
    NUM_SHOTS="$(shots_value "$SHOTS")"
    require_trainer_config "$TRAINER" "$CFG"
}

# teacher_opts: TRAINER.PROMPTKD.TEACHER_ROOT from the environment into the global array TEACHER_OPTS.
teacher_opts() {
    TEACHER_OPTS=()
    [[ -n "${TEACHER_ROOT:-}" ]] && TEACHER_OPTS=(TRAINER.PROMPTKD.TEACHER_ROOT "$TEACHER_ROOT")
    return 0
}

# train_py ARGS...: run train.py with ARGS, or in echo mode print ARGS as one NUL-separated vector
# (see echo_mode; an empty argument cannot be printed unambiguously and stops the script).
train_py() {
    if echo_mode; then
        local arg
        for arg in "$@"; do
            [[ -n "$arg" ]] || die "echo mode (TRAIN_PY_ECHO) cannot pass an empty train.py argument: $*"
        done
        printf '%s\0' "$@"
        printf '\0'
        return 0
    fi
    "$PYTHON" train.py "$@"
}

# run_train_py OUTPUT_DIR [more train.py arguments]: train.py with the run's data, seed, trainer and configs.
run_train_py() {
    local out="$1"
    shift
    train_py \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer "$TRAINER" \
        --dataset-config-file "configs/datasets/${DATASET}.yaml" \
        --config-file "configs/trainers/${TRAINER}/${CFG}.yaml" \
        --output-dir "$out" \
        "$@"
}
