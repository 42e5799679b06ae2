"""nanollm: the whole LLM training pipeline, from a BPE tokenizer to RLHF and DPO, in small PyTorch."""
