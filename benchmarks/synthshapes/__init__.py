"""SynthShapes: a CPU-sized miniature of the PromptKD / AME benchmark (see README, "SynthShapes").

Modules: `world` (shapes, colours, renderer, domain shifts), `captions`, `dataset_writer` (CoOp layout),
`tiny_clip` (model sizes, initial state dicts), `pretrain` (contrastive pretraining into the cache),
`cache`, `jobs` (train.py runs in warm worker processes), `plots`, `benchmark` (the one-command pipeline).
"""
