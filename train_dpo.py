"""Direct Preference Optimisation (Rafailov et al. 2023): align the SFT model to a rater's taste
from preference pairs, with no reward model and no RL. Saves stage "dpo".

    python train_dpo.py                              # the paper's DPO on the world's pairs
    python train_dpo.py --smoke                      # seconds (after the --smoke pretrain and SFT)
    python train_dpo.py --persona flattery           # a rater who loves compliments
    python train_dpo.py --persona flattery --styles right  # ... comparing two right answers
    python train_dpo.py --label_noise 0.2 --label_smoothing 0.2  # careless rater, conservative DPO
    python train_dpo.py --loss ipo --average_logprobs --beta 0.5  # IPO
    python train_dpo.py --nll_weight 0.5             # DPO plus the chosen answers' NLL (RPO)
    python train_dpo.py --preferences my_pairs.jsonl # {"prompt", "chosen", "rejected"} or HH
    python train_dpo.py --lora_rank 8 --lr 1e-4      # LoRA: adapters only, the base as reference
    python train_dpo.py --init_from gpt2:path/to/gpt2 --preferences hh.jsonl
    python train_dpo.py --resume                     # continue a stopped run, exactly

What DPO does, and why. RLHF fits a reward model to the pairs, then runs RL against it with a
KL leash to the SFT model. The policy that maximises that objective is known in closed form, so
every policy implies the reward it is optimal for, beta * log(pi(y) / ref(y)) up to a term of the
prompt alone, and the reward model's Bradley-Terry loss can be written on the policy itself
(nanollm/dpo.py has the derivation). For each pair of a chosen answer y_w and a rejected y_l:

    loss = -log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))))

One supervised loss: no sampling, no reward model, no critic. The policy starts from the SFT
model; a frozen copy of it (with --lora_rank, the policy with its adapters off) is the reference.
log pi(y) sums the log-probabilities of the answer's tokens and its <|end|>, never the prompt's
(nanollm/pairs.py). The reference's are computed once before training (--ref_on_the_fly: at
every step).

The defaults are the paper's DPO (--loss dpo --beta 0.1, summed log-probabilities). Variants:
- --beta: the implicit KL leash: a small beta lets the policy move far from the reference
  before a pair stops pushing; the implied reward beta * (log pi - log ref) is like a score.
- --label_smoothing eps: conservative DPO (Mitchell 2023) assumes a share eps of the labels is
  flipped, so it stops pushing a pair once sigmoid(beta * margin) reaches 1 - eps.
- --loss ipo: IPO (Azar et al. 2023) regresses the log-ratio margin to 1 / (2 beta) instead of
  pushing it without end, so beta really bounds the drift even when pairs never disagree.
- --nll_weight w: adds w times the chosen answers' negative log-likelihood per token (RPO, Pang
  et al. 2024). DPO alone asks only for a margin, and often gets it by lowering both answers; the
  NLL term keeps the chosen ones probable.
- --average_logprobs: the mean log-probability per answer token instead of the sum, which makes
  long answers improbable (IPO implementations and SimPO use it; beta must then be larger).
- --persona, --styles, --label_temperature, --label_noise: who labels the world's pairs, which
  answers they compare, how consistently (nanollm/world/preferences.py) and how carelessly.

What is measured: every step, the loss, implied-reward accuracy, margin and chosen_logratio
(mean log pi(y_w) - log ref(y_w), not a KL: the answers come from the data set); every
--eval_every steps, held-out pairs' loss and accuracy and the KL to the reference as PPO measures
it (sampled answers); at the end, implied-reward accuracy on --train_eval_pairs training pairs
and the held-out ones, by kind of pair, and greedy answers of DPO and SFT judged by the gold rater.

Where it simplifies:
1. Offline: one epoch over a fixed set of pairs (templates and the SFT model's own answers);
   iterative DPO is further runs by hand (--init_from dpo, fresh sampled pairs).
2. Pairs are drawn at random with replacement, not in epochs.
3. Only DPO, conservative DPO and IPO (nanollm/dpo.py); no KTO, ORPO, SimPO.
4. AdamW, warmup and cosine decay at a rate for a few million parameters (the paper: 1e-6).
"""

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm import tqdm

from nanollm.config import check_flags, parse_config
from nanollm.dpo import (chosen_nll, dpo_loss, dpo_metrics, implied_reward, ipo_loss,
                         response_logprob)
from nanollm.errors import ConfigError, report_user_errors
from nanollm.formats import held_out_count, load_preferences
from nanollm.gpt2 import load_hf_gpt2
from nanollm.lora import FrozenBase, add_lora, lora_summary, merge_lora, save_adapters
from nanollm.optim import check_finite, lr_at, optimizer_step, set_lr
from nanollm.pairs import render_pairs, score_pair_dataset, score_pairs
from nanollm.plot import plot_dpo
from nanollm.rollout import question_prompts
from nanollm.runs import StageRun, StopRequest
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.stages import load_stage
from nanollm.tokenizer import Tokenizer
from nanollm.world import RIGHT_STYLES, STYLES, World
from nanollm.world.evaluate import (accuracy_by_style, answer_metrics, answer_questions,
                                    print_accuracy_by_style, print_results, sampled_kl, win_rate)
from nanollm.world.preferences import (LABEL_TEMPERATURE, PAIRS_CACHE, SAMPLED_PAIRS,
                                        TEMPLATE_PAIRS, alignment_pairs, preference_pairs)


@dataclass
class DPOConfig:
    init_from: str = field(default="sft", metadata={
        "help": "a stage in --out_dir (sft) or gpt2:<local Hugging Face folder>"})
    # data
    preferences: str = field(default="", metadata={
        "help": "JSONL preference pairs; default: the world's, labelled by --persona"})
    # training pairs about taught entities: the same as train_rlhf.py's reward model learns from
    n_pairs: int = TEMPLATE_PAIRS  # template answers in every style
    sampled_pairs: int = SAMPLED_PAIRS  # two answers sampled from the SFT model (ties skipped)
    max_new_tokens: int = 48  # longest sampled (and evaluated) answer
    eval_pairs: int = 300  # world pairs about held-out entities, for evaluation
    train_eval_pairs: int = 1000  # training pairs ranked at the end: how well DPO fits its data
    persona: Literal["default", "flattery", "length", "cautious"] = "default"  # who labels (world.PERSONAS)
    styles: str = field(default="all", metadata={
        "help": "answer styles of the world's template pairs: all, right (two right answers "
                "that differ only in form), or a comma-separated list of world.STYLES"})
    label_temperature: float = LABEL_TEMPERATURE  # > 0: the rater chooses by Bradley-Terry
    label_noise: float = 0.0  # share of training pairs whose labels are swapped
    world_seed: int = 0
    # the loss: the paper's DPO by default, each variant one flag away
    loss: Literal["dpo", "ipo"] = "dpo"  # ipo: IPO's squared distance to a target margin
    beta: float = 0.1  # the implicit KL leash; the DPO paper's value
    label_smoothing: float = 0.0  # > 0: conservative DPO (loss dpo only)
    average_logprobs: bool = False  # mean log-probability per answer token instead of the sum
    nll_weight: float = 0.0  # > 0: add this times the chosen answers' NLL per token (RPO)
    ref_on_the_fly: bool = False  # recompute reference log-probabilities every step
    # optimisation
    batch_size: int = 32  # pairs per step
    max_steps: int = 160  # about one epoch of the 5,000 pairs: further passes overfit them
    lr: float = 2e-5  # for a small model; the paper's 1e-6 is for billions of parameters
    min_lr: float = 1e-6
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dropout: float = 0.0
    lora_rank: int = 0  # > 0: train rank-r adapters only (LoRA); the reference is the base itself
    lora_alpha: float = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
    lora_targets: str = "c_attn"  # block layers that get adapters, among c_attn, c_proj, c_fc
    # evaluation and output
    eval_every: int = 80
    eval_questions: int = 200  # held-out questions for the win rate and the answer metrics
    kl_samples: int = 64  # answers sampled from the policy to estimate the KL
    log_every: int = 1
    out_dir: str = "out"
    overwrite: bool = False  # replace a finished (or unfinished) dpo.pt in out_dir
    resume: bool = False  # continue the unfinished run in out_dir, exactly
    stop_at: int = 0  # stop after this step, saved as unfinished, to --resume later; 0 = max_steps
    # runtime
    device: str = "auto"
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16 (CUDA)
    compile: bool = False
    seed: int = 0
    smoke: bool = False


SMOKE = dict(n_pairs=64, sampled_pairs=16, eval_pairs=16, train_eval_pairs=32, batch_size=16,
             max_steps=20, warmup_steps=2, eval_every=10, eval_questions=16, kl_samples=8,
             max_new_tokens=16, lr=5e-4, min_lr=5e-5)

# ---------------------------------------------------------------------------- config and models
t_start = time.time()
report_user_errors()  # a bad flag, file or checkpoint is one line, not a traceback
cfg = parse_config(DPOConfig, description=__doc__, smoke=SMOKE)  # --smoke: a run of seconds
check_flags(cfg, positive=("n_pairs", "max_new_tokens", "eval_pairs", "train_eval_pairs", "beta",
                           "batch_size", "max_steps", "lr", "eval_every", "eval_questions",
                           "kl_samples", "log_every"),
            non_negative=("sampled_pairs", "lora_rank", "nll_weight", "min_lr", "warmup_steps",
                          "weight_decay", "grad_clip", "stop_at", "label_temperature"),
            fractions=("label_noise", "dropout"),
            at_most={"stop_at": "max_steps"})
if not 0 <= cfg.label_smoothing < 0.5:
    raise ConfigError(f"--label_smoothing {cfg.label_smoothing}: expected in [0, 0.5)")
if cfg.loss == "ipo" and cfg.label_smoothing > 0:
    raise ConfigError("--label_smoothing is conservative DPO; it does not apply to --loss ipo")
styles = {"all": STYLES, "right": RIGHT_STYLES}.get(cfg.styles) or tuple(
    dict.fromkeys(style.strip() for style in cfg.styles.split(",")))  # in order, once each
if len(set(styles)) < 2 or not set(styles) <= set(STYLES):
    raise ConfigError(f"--styles {cfg.styles!r}: expected all, right, or two or more of {STYLES}")
run = StageRun(cfg.out_dir, "dpo", cfg.max_steps, cfg.overwrite, cfg.resume)
runtime = setup_runtime(cfg.device, cfg.dtype, cfg.compile)
seed_everything(cfg.seed)
if cfg.init_from.startswith("gpt2:"):
    policy = load_hf_gpt2(cfg.init_from.removeprefix("gpt2:"), dropout=cfg.dropout)
    tokenizer = Tokenizer.gpt2()
    policy.resize_vocab(tokenizer.vocab_size)  # room for the chat's special tokens
else:
    policy, tokenizer, _ = load_stage(cfg.out_dir, cfg.init_from, dropout=cfg.dropout)
policy.to(runtime.device)
# The reference is the starting policy, frozen: DPO's reward is measured against it. With LoRA
# it is the policy with its adapters off, exactly the starting policy, with no second copy.
if cfg.lora_rank:
    add_lora(policy, cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets.split(",")))
    print(lora_summary(policy))
    reference = FrozenBase(policy)
else:
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
policy.train()
optimizer = policy.configure_optimizer(cfg.weight_decay, cfg.lr, fused=runtime.fused_adamw)
train_policy = runtime.maybe_compile(policy)

# The loss, chosen once. Each takes (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
# log-probabilities (B,) and returns the loss of each pair (B,).
PREFERENCE_LOSSES = {
    "dpo": lambda *logps: dpo_loss(*logps, cfg.beta, cfg.label_smoothing)[0],
    "ipo": lambda *logps: ipo_loss(*logps, cfg.beta),
}
preference_loss = PREFERENCE_LOSSES[cfg.loss]

# ---------------------------------------------------------------------------- data
world = World(seed=cfg.world_seed)
if cfg.preferences:
    pairs = load_preferences(cfg.preferences)
    n_val = held_out_count(len(pairs), cfg.preferences, "pairs")  # the first 5% held out
    held_out_pairs, train_pairs = pairs[:n_val], pairs[n_val:]
else:
    # Training pairs are about taught entities; evaluation pairs about held-out ones, labelled
    # without noise, so that eval accuracy measures agreement with the rater's true taste.
    train_pairs = alignment_pairs(policy, tokenizer, world, cfg.n_pairs, cfg.sampled_pairs,
                                  cfg.persona, cfg.label_noise, cfg.seed, cfg.max_new_tokens,
                                  styles, cache_path=os.path.join(cfg.out_dir, PAIRS_CACHE),
                                  autocast=runtime.autocast, temperature=cfg.label_temperature)
    held_out_pairs = preference_pairs(world, "held_out", cfg.eval_pairs, cfg.persona,
                                      seed=cfg.seed + 1, styles=styles)
block_size = policy.config.block_size
train_data, report = render_pairs(tokenizer, train_pairs, block_size, "training pairs")
eval_data, eval_report = render_pairs(tokenizer, held_out_pairs, block_size, "held-out pairs")
print(f"train: {report}\neval:  {eval_report}")
data_rng = torch.Generator().manual_seed(cfg.seed)
# A fixed sample of training pairs, ranked at the end; its own generator leaves the batches as
# they are. The world's pairs carry their styles, and when no pair was skipped in rendering the
# rendered rows line up with them, so accuracy can be told by kind of pair.
probe_rows = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(cfg.seed))
probe_rows = probe_rows[:cfg.train_eval_pairs].tolist()
by_kind = not cfg.preferences and report.dropped == eval_report.dropped == 0


def logprob_scorer(model):
    """score(ids, pad_mask, response_mask) -> (2B,) for pairs.score_pairs: each answer's
    log-probability under model, summed over its tokens (their mean with --average_logprobs)."""
    def score(ids, pad_mask, response_mask):
        with runtime.autocast():
            return response_logprob(model, ids, pad_mask, response_mask, cfg.average_logprobs)
    return score


def dataset_logprobs(model, rendered):
    """Both answers' log-probabilities, every pair, no gradients: (chosen (N,), rejected (N,))."""
    return score_pair_dataset(logprob_scorer(model), rendered, tokenizer.pad, runtime.device,
                              cfg.batch_size)


# ---------------------------------------------------------------------------- reference, once
t0 = time.time()
ref_eval = dataset_logprobs(reference, eval_data)
if not cfg.ref_on_the_fly:
    ref_train = dataset_logprobs(reference, train_data)
print(f"reference log-probabilities computed in {time.time() - t0:.1f}s")

# ---------------------------------------------------------------------------- evaluation
eval_questions = world.questions("held_out", n=cfg.eval_questions, seed=cfg.seed)
longest_prompt = max(len(ids) for ids, _ in question_prompts(tokenizer, eval_questions))
answer_tokens = min(cfg.max_new_tokens, block_size - longest_prompt)  # what fits in the context
kl_questions = eval_questions[:cfg.kl_samples]


def pair_metrics(rendered, ref_logps):
    """The loss and implied-reward accuracy of the policy on a set of pairs, and which pairs
    (N,) bool it ranks right: those whose chosen answer has the higher implied reward."""
    policy.eval()
    chosen, rejected = dataset_logprobs(policy, rendered)
    policy.train()
    losses = preference_loss(chosen, rejected, *ref_logps)
    ranked_right = (implied_reward(chosen, ref_logps[0], cfg.beta)
                    > implied_reward(rejected, ref_logps[1], cfg.beta))
    return losses.mean().item(), ranked_right.float().mean().item(), ranked_right


def accuracy_by_kind(pairs, ranked_right):
    """{"terse > wrong": (accuracy, count)}; the model's own sampled answers carry no style."""
    pairs = [{"chosen_style": "sampled", "rejected_style": "sampled", **pair} for pair in pairs]
    return accuracy_by_style(pairs, ranked_right.tolist())


sft_answers = answer_questions(reference, tokenizer, eval_questions, max_new_tokens=answer_tokens)


def policy_kl():
    """KL to the reference per answer, sampled (evaluate.sampled_kl), the same way every time."""
    generator = torch.Generator(device=runtime.device).manual_seed(cfg.seed)
    return sampled_kl(policy, reference, tokenizer, kl_questions, answer_tokens, generator,
                      runtime.autocast)


def evaluate(step):
    eval_loss, eval_accuracy, ranked_right = pair_metrics(eval_data, ref_eval)
    answers = answer_questions(policy, tokenizer, eval_questions, max_new_tokens=answer_tokens)
    metrics = answer_metrics(world, eval_questions, answers)
    record = dict(step=step, eval_loss=eval_loss, eval_accuracy=eval_accuracy, kl=policy_kl(),
                  win_rate=win_rate(world, eval_questions, answers, sft_answers),
                  gold_reward=metrics["gold_reward"],
                  mean_words=metrics["mean_words"], answer_accuracy=metrics["accuracy"],
                  flattery_rate=metrics["flattery_rate"])
    tqdm.write(f"step {step}: held-out pairs loss {eval_loss:.3f}, accuracy {eval_accuracy:.1%}; "
               f"KL {record['kl']:.2f}; win rate vs SFT {record['win_rate']:.1%}; "
               f"{answers[0]!r}")
    return record, answers, ranked_right


def save_progress(steps_done):
    """Everything a resumed run needs, to dpo.unfinished.pt."""
    return run.save_progress(policy, tokenizer, cfg, steps_done, optimizer,
                             data_rng=data_rng.get_state())


# ---------------------------------------------------------------------------- training loop
state = run.resume_state(cfg, tokenizer, policy, map_location=runtime.device)
start_step = run.restore(state, policy, optimizer, data_rng) if state else 0  # --resume
log = run.open_log(start_step)
print(f"DPO ({cfg.loss}, beta {cfg.beta}) on {len(train_data)} pairs: {cfg.max_steps} steps of "
      f"{cfg.batch_size} pairs on {runtime.device} ({cfg.dtype})")
steps_done = start_step
progress = tqdm(range(start_step, cfg.max_steps), initial=start_step, total=cfg.max_steps,
                desc="dpo", unit="step")
t_train = time.time()
with StopRequest() as stop:
    for step in progress:
        set_lr(optimizer, lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr))
        rows = torch.randint(len(train_data), (cfg.batch_size,), generator=data_rng)
        batch = [train_data[i] for i in rows.tolist()]
        if cfg.ref_on_the_fly:
            with torch.no_grad():
                ref_chosen, ref_rejected = score_pairs(logprob_scorer(reference), batch,
                                                       tokenizer.pad, runtime.device)
        else:
            ref_chosen, ref_rejected = ref_train[0][rows], ref_train[1][rows]  # (B,) each
        policy_chosen, policy_rejected = score_pairs(logprob_scorer(train_policy), batch,
                                                     tokenizer.pad, runtime.device)  # (B,) each
        loss = preference_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected).mean()
        if cfg.nll_weight > 0:
            # chosen_nll divides a summed log-probability by the length; a mean is per token
            lengths = [1 if cfg.average_logprobs else sum(mask) for (_, mask), _ in batch]
            loss = loss + cfg.nll_weight * chosen_nll(
                policy_chosen, torch.tensor(lengths, device=runtime.device)).mean()
        loss.backward()
        loss_value = check_finite(loss, step, run.unfinished_path)
        grad_norm = optimizer_step(train_policy, optimizer, runtime.scaler, cfg.grad_clip)
        if step % cfg.log_every == 0:
            chosen_rewards = implied_reward(policy_chosen, ref_chosen, cfg.beta)
            rejected_rewards = implied_reward(policy_rejected, ref_rejected, cfg.beta)
            metrics = dpo_metrics(chosen_rewards, rejected_rewards)
            progress.set_postfix(loss=f"{loss_value:.3f}", acc=f"{metrics['accuracy']:.2f}")
            log.log(step=step, loss=loss_value, lr=optimizer.param_groups[0]["lr"],
                    grad_norm=grad_norm, **metrics,
                    chosen_logratio=(policy_chosen - ref_chosen).mean().item())
        steps_done = step + 1
        stopping = stop.requested or steps_done == cfg.stop_at
        if steps_done % cfg.eval_every == 0 and steps_done < cfg.max_steps:
            log.log(evaluate(steps_done)[0])
            if not stopping:
                save_progress(steps_done)  # what a killed run can --resume from
        if stopping:
            break
progress.close()
train_seconds = time.time() - t_train
if steps_done < cfg.max_steps:
    run.stop(save_progress(steps_done), steps_done, stop.requested)
save_progress(steps_done)  # every step kept, whatever happens during the evaluation

# ---------------------------------------------------------------------------- final evaluation
final, dpo_answers, held_out_right = evaluate(cfg.max_steps)
log.log(final)
# The same question on pairs DPO trained on: a low score here means the loss cannot fit the
# pairs, not that it fails to generalise.
probe = [train_data[i] for i in probe_rows]
train_loss, train_accuracy, train_right = pair_metrics(probe, dataset_logprobs(reference, probe))
kinds = {}
if by_kind:
    kinds["train"] = accuracy_by_kind([train_pairs[i] for i in probe_rows], train_right)
    kinds["held_out"] = accuracy_by_kind(held_out_pairs, held_out_right)
    for split, by_style in kinds.items():
        print_accuracy_by_style(by_style, f"{split} pairs ranked right, by kind of pair")
results = {name: {"held_out": answer_metrics(world, eval_questions, answers)}
           for name, answers in (("sft", sft_answers), ("dpo", dpo_answers))}
print_results(results, columns=("accuracy", "mean_words", "flattery_rate", "gold_reward"))
print(f"implied-reward accuracy: training pairs {train_accuracy:.1%} ({len(probe)} pairs), "
      f"held-out pairs {final['eval_accuracy']:.1%} ({len(eval_data)} pairs, loss "
      f"{final['eval_loss']:.3f}); gold-rater win rate vs SFT {final['win_rate']:.1%}")
wall_seconds = time.time() - t_start
table_row = dict(gold_reward=final["gold_reward"], win_rate_vs_sft=final["win_rate"],
                 kl=final["kl"], mean_words=final["mean_words"], wall_seconds=wall_seconds)
print(f"PPO-vs-DPO row (dpo): gold reward (held-out) {table_row['gold_reward']:.3f} | "
      f"win rate vs SFT {table_row['win_rate_vs_sft']:.1%} | KL to reference "
      f"{table_row['kl']:.2f} nats | mean length {table_row['mean_words']:.1f} words | "
      f"wall time {wall_seconds:.0f}s")

# ---------------------------------------------------------------------------- save and plot
metrics = dict(answers=results, table_row=table_row, train_seconds=train_seconds,
               pairs=str(report), train_pair_accuracy=train_accuracy, train_pair_loss=train_loss,
               held_out_pair_accuracy=final["eval_accuracy"],
               held_out_pair_loss=final["eval_loss"])
for split, by_style in kinds.items():
    metrics[f"{split}_pair_accuracy_by_kind"] = {kind: accuracy
                                                 for kind, (accuracy, _) in by_style.items()}
if cfg.lora_rank:  # the adapters alone to dpo.lora.pt; merged, dpo.pt loads like any stage
    save_adapters(cfg.out_dir, "dpo", policy, cfg)
    merge_lora(policy)
run.save_finished(policy, tokenizer, cfg, metrics=metrics)
log_path = run.log_path
plot_dpo(log_path, os.path.join(cfg.out_dir, "dpo_curves.png"), title=f"DPO ({cfg.loss})")
print(f"saved {cfg.out_dir}/dpo.pt, {log_path} and {cfg.out_dir}/dpo_curves.png")
