"""Sample text from any saved stage.

    python -m nanollm.sample --stage pretrain --prompt "The capital of France is"
    python -m nanollm.sample --stage pretrain --prompt "Once upon a time" --temperature 0.8 -n 3
    python -m nanollm.sample --stage sft.q4     # a quantized file (python -m nanollm.quantize)

The prompt is plain text continued as a document, the way the model read text in pretraining
(to talk to a fine-tuned stage in chat format, use `python -m nanollm.chat`).
"""

from dataclasses import dataclass, field

import torch

from nanollm.config import parse_config
from nanollm.errors import report_user_errors
from nanollm.generate import generate
from nanollm.quantize import is_quantized_name, load_quantized
from nanollm.stages import load_stage


@dataclass
class SampleConfig:
    stage: str = "pretrain"
    out_dir: str = "out"
    prompt: str = "The capital of France is"
    num_samples: int = field(default=1, metadata={"help": "how many continuations"})
    max_new_tokens: int = 64
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    seed: int = 0


def main(argv=None):
    cfg = parse_config(SampleConfig, argv, description=__doc__)
    load = load_quantized if is_quantized_name(cfg.stage) else load_stage
    model, tokenizer, _ = load(cfg.out_dir, cfg.stage)
    prompt = [tokenizer.eot] + tokenizer.encode(cfg.prompt)  # a new document starts here
    out = generate(model, [prompt] * cfg.num_samples, cfg.max_new_tokens, cfg.temperature,
                   top_k=cfg.top_k or None, top_p=cfg.top_p if cfg.top_p < 1 else None,
                   stop_ids=[tokenizer.eot], pad_id=tokenizer.pad,
                   generator=torch.Generator().manual_seed(cfg.seed))
    for ids in out.responses():
        print(cfg.prompt + tokenizer.decode([t for t in ids if t != tokenizer.eot]))
        print("-" * 40)


if __name__ == "__main__":
    report_user_errors()  # a missing or wrong checkpoint is one line, not a traceback
    main()
